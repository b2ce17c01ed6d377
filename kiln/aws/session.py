"""boto3 clients for kiln: the standard credential chain, one retry policy, clear errors.

Credentials, profiles and endpoints come from boto3's own chain (environment, ~/.aws,
SSO, instance role; `AWS_ENDPOINT_URL` points every client elsewhere, which the tests
use for moto). The region is config's aws.region unless the task was given --region.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar
from urllib.parse import urlsplit

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
# How long connect() waits for the EC2 endpoint to resolve and accept a connection: an
# unreachable endpoint is reported in seconds, not after botocore's retries (20-30 s).
REACH_SECONDS = 4.0
REGION_FORM = re.compile(r"[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}")
ENDPOINT_HINT = "check the network (and a proxy), the region name, and AWS_ENDPOINT_URL if set"
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
    """A session with credentials for a region botocore knows whose EC2 endpoint accepts a
    connection; otherwise a UserError saying what to fix (no AWS API call yet)."""
    check_region(region)
    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        raise UserError("no AWS credentials found (environment, ~/.aws, SSO or instance role)",
                        CREDENTIALS_HINT)
    check_reachable(session.client("ec2", region_name=region).meta.endpoint_url, region)
    return Aws(session, region)


@cache
def known_regions() -> frozenset[str]:
    """Every region of every partition in botocore's own endpoint data (no network)."""
    session = boto3.session.Session()
    return frozenset(r for p in session.get_available_partitions()
                     for r in session.get_available_regions("ec2", partition_name=p))


def check_region(region: str) -> str:
    """`region` if botocore knows it (any well-formed name with AWS_ENDPOINT_URL set: a stand-in
    such as moto or LocalStack); a one-line UserError otherwise."""
    shown = repr(region) if len(region) <= 40 else repr(region[:37] + "...")
    if not REGION_FORM.fullmatch(region):
        raise UserError(f"AWS region {shown}: not a region name (like us-east-1)",
                        "set aws.region in the config or pass --region")
    if region not in known_regions() and not (os.environ.get("AWS_ENDPOINT_URL")
                                              or os.environ.get("AWS_ENDPOINT_URL_EC2")):
        close = difflib.get_close_matches(region, sorted(known_regions()), n=3)
        guess = f"did you mean {' or '.join(close)}? " if close else "e.g. us-east-1 or eu-west-1; "
        raise UserError(f"unknown AWS region {shown}: botocore knows {len(known_regions())} regions and "
                        "not this one", f"{guess}set aws.region or pass --region (a region newer than "
                        "this boto3: pip install -U boto3)")
    return region


def check_reachable(url: str, region: str, timeout: float = REACH_SECONDS) -> None:
    """A UserError within `timeout` seconds when the endpoint (or the proxy in front of it) does not
    resolve or take a TCP connection."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or host, proxied.port or 80
    problem = _connect_within(host, port, timeout)
    if problem:
        raise UserError(f"cannot reach AWS EC2 for {region} at {url}: {problem}", ENDPOINT_HINT)


def _connect_within(host: str, port: int, timeout: float) -> str:
    """'' when host:port takes a TCP connection within `timeout` seconds, else why not. Name lookup
    runs in a daemon thread: getaddrinfo has no timeout of its own."""
    outcome: list[str] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append("")
        except socket.gaierror as exc:
            outcome.append(f"{host} does not resolve ({exc.strerror})")
        except OSError as exc:
            outcome.append(f"{host}:{port}: {exc.strerror or exc}")

    worker = threading.Thread(target=attempt, name="kiln-aws-reach", daemon=True)
    worker.start()
    worker.join(timeout + 1)
    return outcome[0] if outcome else f"no answer from {host}:{port} within {timeout:.0f} s"


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
