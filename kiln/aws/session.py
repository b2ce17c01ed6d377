"""boto3 clients for kiln: the standard credential chain, one retry policy, clear errors.

Credentials, profiles and endpoints come from boto3's own chain (environment, ~/.aws,
SSO, instance role; `AWS_ENDPOINT_URL` points every client elsewhere, which the tests
use for moto). The region is config's aws.region unless the task was given --region.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from kiln.errors import UserError

T = TypeVar("T")

# Adaptive mode adds client-side rate limiting on top of standard retries, which is what a
# launch of many instances followed by many describe calls needs when EC2 throttles.
RETRIES = BotoConfig(retries={"mode": "adaptive", "max_attempts": 10}, connect_timeout=10,
                     read_timeout=60)

CLUSTER_TAG = "kiln:cluster"
CREDENTIALS_HINT = ("run `aws configure` (or `aws sso login`), or export AWS_PROFILE, "
                    "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
_AUTH_CODES = {"AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "ExpiredToken",
               "RequestExpired", "SignatureDoesNotMatch", "OptInRequired"}


@dataclass(frozen=True)
class Aws:
    """A boto3 session bound to the region kiln works in."""

    session: boto3.session.Session
    region: str

    def ec2(self, region: str | None = None) -> Any:
        return self.session.client("ec2", region_name=region or self.region, config=RETRIES)


def connect(region: str) -> Aws:
    """A session with credentials, or a UserError saying how to get some (no AWS call yet)."""
    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        raise UserError("no AWS credentials found (environment, ~/.aws, SSO or instance role)",
                        CREDENTIALS_HINT)
    return Aws(session, region)


@contextlib.contextmanager
def aws_errors() -> Iterator[None]:
    """Turn the AWS failures a user can fix (credentials, endpoint, region) into UserErrors."""
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise UserError(f"AWS credentials are missing or incomplete ({exc})", CREDENTIALS_HINT) from None
    except NoRegionError:
        raise UserError("no AWS region set", "set aws.region in config.json or pass --region") from None
    except EndpointConnectionError as exc:
        raise UserError(f"cannot reach AWS: {exc}",
                        "check the network, the region name and AWS_ENDPOINT_URL if set") from None
    except ClientError as exc:
        if error_code(exc) in _AUTH_CODES:
            raise UserError(f"AWS refused the request: {error_text(exc)}", CREDENTIALS_HINT) from None
        raise


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def error_text(exc: BaseException) -> str:
    """'Code: message' for AWS errors, the plain message for anything else."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".rstrip(": ")
    return str(exc) or type(exc).__name__


def retry_on(codes: set[str], call: Callable[[], T], *, attempts: int = 8, delay: float = 1.0,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """Call again while AWS answers with one of `codes` (eventual consistency right after a
    create: the new id is not yet known to every endpoint). botocore's retries do not cover
    these codes because they are not throttling or server errors."""
    for attempt in range(attempts):
        try:
            return call()
        except ClientError as exc:
            if error_code(exc) not in codes or attempt == attempts - 1:
                raise
            sleep(min(delay * 2 ** attempt, 15.0))
    raise AssertionError("unreachable")


def tags_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tags_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def tag_specs(tags: Mapping[str, str], *resource_types: str) -> list[dict[str, Any]]:
    """TagSpecifications, so resources are born tagged: nothing untagged exists even briefly."""
    return [{"ResourceType": r, "Tags": tags_list(tags)} for r in resource_types]


AWS_FAILURES: tuple[type[BaseException], ...] = (ClientError, BotoCoreError)
