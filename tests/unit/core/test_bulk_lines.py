"""A batch of records from one template: the same text as ``template % row``, row by row,
whatever is the same in every row and whatever ``%`` the fixed text holds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.core.bulk_lines import lines, parts_of

text = st.text(alphabet="ab%s{}:,\"'", max_size=6)


@given(
    st.lists(text, min_size=1, max_size=5),
    st.integers(1, 4),
    st.data(),
)
def test_lines_are_the_template_filled_row_by_row(
    fixed: list[str], rows: int, data: st.DataObject
) -> None:
    template = "%s".join(f.replace("%", "%%") for f in fixed)
    parts = parts_of(template)
    assert parts == fixed
    slots: list[str | list[str]] = []
    for _ in range(len(fixed) - 1):
        if data.draw(st.booleans()):
            slots.append(data.draw(text))  # the same in every row
        else:
            slots.append(data.draw(st.lists(text, min_size=rows, max_size=rows)))
    want = [template % tuple(s if isinstance(s, str) else s[r] for s in slots) for r in range(rows)]
    assert lines(parts, slots, rows) == want
