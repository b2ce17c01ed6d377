"""AWS side of kiln (boto3): AMIs kiln baked, and clusters launched from them.

session   clients with retry settings, credential and endpoint errors as UserErrors
images    list / prune kiln AMIs; after a Packer build, enforce IMDSv2 on every copy
network   subnet and private addresses, the cluster's security group, its key pair
userdata  the boot script that hands each node its spec
cluster   launch / status / ssh-config / destroy, all found again by tag

Every resource kiln creates carries the tag `kiln:cluster=<name>` (clusters) or
`kiln:version` (AMIs), so status and destroy work from any machine with credentials.
"""
