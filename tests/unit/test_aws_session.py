"""Errors a user can fix become one message with a fix; eventual consistency is retried."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from kiln.aws.session import aws_errors, error_text, retry_on, tag_specs
from kiln.errors import UserError


def client_error(code: str, message: str = "boom") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "DoSomething")


def test_missing_credentials_become_a_user_error_with_the_fix() -> None:
    with pytest.raises(UserError) as info, aws_errors():
        raise NoCredentialsError()
    assert "aws configure" in str(info.value) and info.value.exit_code == 2


@pytest.mark.parametrize("code", ["AuthFailure", "UnauthorizedOperation", "ExpiredToken"])
def test_rejected_credentials_become_a_user_error(code: str) -> None:
    with pytest.raises(UserError, match=code), aws_errors():
        raise client_error(code)


def test_unreachable_endpoint_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot reach AWS"), aws_errors():
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")


def test_other_aws_errors_pass_through() -> None:
    with pytest.raises(ClientError), aws_errors():
        raise client_error("InvalidParameterValue")


def test_retry_on_waits_out_a_not_yet_known_id() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise client_error("InvalidGroup.NotFound")
        return "ok"

    assert retry_on({"InvalidGroup.NotFound"}, flaky, sleep=slept.append) == "ok"
    assert slept == [1.0, 2.0]


def test_retry_on_gives_up_and_ignores_other_codes() -> None:
    slept: list[float] = []

    def always(code: str) -> None:
        raise client_error(code)

    with pytest.raises(ClientError, match=r"InvalidGroup\.NotFound"):
        retry_on({"InvalidGroup.NotFound"}, lambda: always("InvalidGroup.NotFound"), attempts=3,
                 sleep=slept.append)
    assert len(slept) == 2
    with pytest.raises(ClientError, match="InvalidParameterValue"):
        retry_on({"InvalidGroup.NotFound"}, lambda: always("InvalidParameterValue"), sleep=slept.append)
    assert len(slept) == 2


def test_error_text_and_tag_specs() -> None:
    assert error_text(client_error("InvalidInstanceType", "m9.bogus")) == "InvalidInstanceType: m9.bogus"
    assert tag_specs({"b": "2", "a": "1"}, "instance", "volume") == [
        {"ResourceType": "instance", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]},
        {"ResourceType": "volume", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}]
