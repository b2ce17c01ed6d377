from kiln.image.hcl import hcl


def test_hcl_literals_escape_interpolation() -> None:
    assert hcl("a${b}%{c}") == '"a$${b}%%{c}"'
    assert hcl(["x", 1, True]) == '["x", 1, true]'
    assert hcl({"b": 1, "a": "z"}) == '{ "a" = "z", "b" = 1 }'
    assert hcl({}) == "{}"
