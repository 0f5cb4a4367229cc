"""Lint-only stand-ins for dbt's cross-database macros (`{{ dbt.bool_or(...) }}` ...), for sqlfluff."""


def bool_or(expression):
    return f"bool_or({expression})"


def any_value(expression):
    return f"any_value({expression})"


def listagg(measure, delimiter_text="','", order_by_clause=None, limit_num=None):
    return f"string_agg({measure}, {delimiter_text} {order_by_clause or ''})"


def dateadd(datepart, interval, from_date_or_timestamp):
    return f"({from_date_or_timestamp} + interval ({interval}) {datepart})"


def datediff(first_date, second_date, datepart):
    return f"date_diff('{datepart}', {first_date}, {second_date})"


def type_int():
    return "integer"


def type_bigint():
    return "bigint"
