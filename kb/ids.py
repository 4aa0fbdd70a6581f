"""Ids as callers may send them: a row id fits a signed 64-bit integer, and a number
past that is no id at all (a 404 or a 422), never an overflow in the database."""

ID_MAX = 2**63 - 1


class IdConverter:
    """`<id:name>` in URLs: Django's `<int:...>` bounded to ID_MAX."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > ID_MAX:
            raise ValueError(value)  # Django answers 404
        return number

    def to_url(self, value: int) -> str:
        return str(value)
