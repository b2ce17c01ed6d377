"""Making images: render, Packer, base image, build, accelerator, VM boot, verification, cache."""
