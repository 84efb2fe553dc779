"""Reading parts of a built report.html in the report tests: a section, an arms table."""
from __future__ import annotations

import re


def section(page: str, sid: str) -> str:
    """The inside of <section id=SID>; fails the test when the page has none."""
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, flags=re.S)
    assert m, f"section {sid} not in the page"
    return m.group(1)


def arms_table(page: str, table_id: str) -> tuple[list[str], dict[str, list[str]]]:
    """A compare page's arms table (in its "table" section): its header cells, and each arm's cells by arm id."""
    table = re.search(rf'<table id="{table_id}">.*?</table>', section(page, "table"), flags=re.S).group(0)
    head = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", table)
    rows = {m.group(1): re.findall(r"<td(?: [^>]*)?>(.*?)</td>", m.group(2))
            for m in re.finditer(r'<tr class="[^"]*" data-arm="([^"]+)">(.*?)</tr>', table, flags=re.S)}
    return head, rows
