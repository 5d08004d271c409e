"""OE ``bitbake-prserv-tool export`` / ``import`` text format (prserv.oefile)."""

from __future__ import annotations

import pytest

from prserv import oefile
from prserv.oefile import Problem, Row, export_lines, read_rows

REASON_ASSIGNMENT = 'not a NAME = "VALUE" assignment'
REASON_FIELDS = "expected PRAUTO$VERSION$PKGARCH$CHECKSUM"

METAINFO = {
    "tbl_name": "PRMAIN",
    "core_ver": "2.19.0",
    "col_info": [
        {"name": "version", "type": "TEXT", "notnull": 1, "dflt_value": None, "pk": 1},
        {"name": "pkgarch", "type": "TEXT", "notnull": 1, "dflt_value": None, "pk": 2},
        {"name": "checksum", "type": "TEXT", "notnull": 1, "dflt_value": None, "pk": 3},
        {"name": "value", "type": "TEXT", "notnull": 0, "dflt_value": None, "pk": 0},
    ],
}

METAINFO_LINES = [
    '#PR_core_ver = "2.19.0"\n\n',
    "#Table: PRMAIN\n",
    "#Columns:\n",
    "#name      \t type    \t notn    \t dflt    \t pk\n",
    "#----------\t --------\t --------\t --------\t ----\n",
    "#   version\t     TEXT\t        1\t     None\t    1\n",
    "#   pkgarch\t     TEXT\t        1\t     None\t    2\n",
    "#  checksum\t     TEXT\t        1\t     None\t    3\n",
    "#     value\t     TEXT\t        0\t     None\t    0\n",
    "\n",
]


def row(version, pkgarch, checksum, value):
    return {"version": version, "pkgarch": pkgarch, "checksum": checksum, "value": value}


# Two packages, (version, pkgarch) pairs interleaved; the maxima differ between numeric
# and string order ("1.20" > "1.3", "10" > "9", "1.0" > "1") and between keying per
# (version, pkgarch) and per pkgarch only.
DATA = [
    row("glibc-2.39", "core2-64", "aaa", "1.3"),
    row("zlib-1.3", "core2-64", "bbb", "9"),
    row("glibc-2.39", "core2-64", "ccc", "1.20"),
    row("glibc-2.39", "armv8a", "ddd", "1.0.3"),
    row("zlib-1.3", "core2-64", "eee", "10"),
    row("glibc-2.40", "core2-64", "fff", "1"),
    row("glibc-2.40", "core2-64", "ggg", "1.0"),
    row("zlib-1.3", "core2-64", "hhh", "2"),
    row("glibc-2.39", "armv8a", "iii", "0"),
]

DATA_LINES = [
    'PRAUTO$glibc-2.39$core2-64$aaa = "1.3"\n',
    'PRAUTO$zlib-1.3$core2-64$bbb = "9"\n',
    'PRAUTO$glibc-2.39$core2-64$ccc = "1.20"\n',
    'PRAUTO$glibc-2.39$armv8a$ddd = "1.0.3"\n',
    'PRAUTO$zlib-1.3$core2-64$eee = "10"\n',
    'PRAUTO$glibc-2.40$core2-64$fff = "1"\n',
    'PRAUTO$glibc-2.40$core2-64$ggg = "1.0"\n',
    'PRAUTO$zlib-1.3$core2-64$hhh = "2"\n',
    'PRAUTO$glibc-2.39$armv8a$iii = "0"\n',
]

MAX_LINES = [
    'PRAUTO_glibc-2.39_core2-64 = "1.20"\n',
    'PRAUTO_zlib-1.3_core2-64 = "10"\n',
    'PRAUTO_glibc-2.39_armv8a = "1.0.3"\n',
    'PRAUTO_glibc-2.40_core2-64 = "1.0"\n',
]

LOCKDOWN_LINE = 'PRSERV_LOCKDOWN = "1"\n\n'


def as_file(lines):
    """The lines as a reader sees them in a file (some elements hold two lines)."""
    return "".join(lines).splitlines(keepends=True)


def split(items):
    items = list(items)
    return ([item for item in items if isinstance(item, Row)],
            [item for item in items if isinstance(item, Problem)])


# --------------------------------------------------------------------------- writing

def test_export_exact_text():
    lines, unwritable = export_lines(DATA)
    assert unwritable == []
    assert lines == DATA_LINES + MAX_LINES
    assert "".join(lines) == "".join(DATA_LINES) + "".join(MAX_LINES)


def test_export_maxima_are_numeric_per_version_and_pkgarch():
    lines, _ = export_lines([row("v", "a", "c1", "1.3"), row("v", "a", "c2", "1.20"),
                             row("w", "a", "c3", "9"), row("w", "a", "c4", "10"),
                             row("x", "a", "c5", "1.0"), row("x", "a", "c6", "1"),
                             row("y", "a", "c7", "2.0.10"), row("y", "a", "c8", "2.0.9")])
    assert lines[8:] == ['PRAUTO_v_a = "1.20"\n', 'PRAUTO_w_a = "10"\n', 'PRAUTO_x_a = "1.0"\n',
                         'PRAUTO_y_a = "2.0.10"\n']


def test_export_two_versions_same_pkgarch_give_two_maxima():
    lines, _ = export_lines([row("1.0", "qemux86", "c1", "5"), row("2.0", "qemux86", "c2", "3")])
    assert lines[2:] == ['PRAUTO_1.0_qemux86 = "5"\n', 'PRAUTO_2.0_qemux86 = "3"\n']


def test_export_maxima_in_first_appearance_order():
    lines, _ = export_lines([row("b", "x", "1", "1"), row("a", "x", "2", "7"), row("b", "x", "3", "4")])
    assert lines[3:] == ['PRAUTO_b_x = "4"\n', 'PRAUTO_a_x = "7"\n']


def test_export_equal_values_keep_first():
    lines, _ = export_lines([row("v", "a", "c1", "3"), row("v", "a", "c2", "3")])
    assert lines == ['PRAUTO$v$a$c1 = "3"\n', 'PRAUTO$v$a$c2 = "3"\n', 'PRAUTO_v_a = "3"\n']


def test_export_nomax():
    lines, unwritable = export_lines(DATA, nomax=True)
    assert lines == DATA_LINES
    assert unwritable == []


def test_export_lockdown():
    lines, _ = export_lines(DATA, lockdown=True)
    assert lines == DATA_LINES + MAX_LINES + [LOCKDOWN_LINE]


def test_export_metainfo_block():
    lines, _ = export_lines(DATA, METAINFO)
    assert lines == DATA_LINES + MAX_LINES + METAINFO_LINES


def test_export_everything():
    lines, _ = export_lines(DATA, METAINFO, nomax=False, lockdown=True)
    assert lines == DATA_LINES + MAX_LINES + METAINFO_LINES + [LOCKDOWN_LINE]


def test_export_nomax_metainfo_lockdown():
    lines, _ = export_lines(DATA, METAINFO, nomax=True, lockdown=True)
    assert lines == DATA_LINES + METAINFO_LINES + [LOCKDOWN_LINE]


def test_export_metainfo_column_formatting():
    meta = {"tbl_name": "PRMAIN_nohist", "core_ver": "1.0.0",
            "col_info": [{"name": "a_very_long_column", "type": "INTEGER", "notnull": 0,
                          "dflt_value": "'x'", "pk": 12345}]}
    lines, _ = export_lines([], meta)
    assert lines == [
        '#PR_core_ver = "1.0.0"\n\n',
        "#Table: PRMAIN_nohist\n",
        "#Columns:\n",
        "#name      \t type    \t notn    \t dflt    \t pk\n",
        "#----------\t --------\t --------\t --------\t ----\n",
        "#a_very_long_column\t  INTEGER\t        0\t      'x'\t 12345\n",
        "\n",
    ]


def test_export_empty_metainfo_is_omitted():
    assert export_lines([], {}) == ([], [])
    assert export_lines([]) == ([], [])


def test_export_empty_with_lockdown():
    assert export_lines([], lockdown=True) == ([LOCKDOWN_LINE], [])


def test_export_accepts_any_iterable_and_int_values():
    lines, unwritable = export_lines(iter([row("v", "a", "c", 5), row("v", "a", "d", 12)]))
    assert lines == ['PRAUTO$v$a$c = "5"\n', 'PRAUTO$v$a$d = "12"\n', 'PRAUTO_v_a = "12"\n']
    assert unwritable == []


@pytest.mark.parametrize("bad", [
    row("v$1", "a", "c", "1"), row("v", "a$b", "c", "1"), row("v", "a", "c$", "1"),
    row('v"', "a", "c", "1"), row("v", 'a"b', "c", "1"), row("v", "a", '"c', "1"),
    row("v 1", "a", "c", "1"), row("v", "a b", "c", "1"), row("v", "a", "c ", "1"),
    row("v\t1", "a", "c", "1"), row("v", "a\tb", "c", "1"), row("v", "a", "c\n", "1"),
    row("v", "a", "c", "abc"), row("v", "a", "c", "-1"), row("v", "a", "c", "1."),
    row("v", "a", "c", "01"), row("v", "a", "c", ""), row("v", "a", "c", "1 "), row("v", "a", "c", None),
    row("v", "a", "c", -1),
])
def test_export_unwritable_rows(bad):
    good1, good2 = row("v", "a", "c1", "1"), row("v", "a", "c2", "2")
    lines, unwritable = export_lines([good1, bad, good2])
    assert lines == ['PRAUTO$v$a$c1 = "1"\n', 'PRAUTO$v$a$c2 = "2"\n', 'PRAUTO_v_a = "2"\n']
    assert unwritable == [bad]
    assert unwritable[0] is bad


def test_export_unwritable_rows_do_not_count_for_maxima():
    lines, unwritable = export_lines([row("v", "a", "c1", "3"), row("v", "a", "c 2", "99"),
                                      row("w", "a b", "c3", "1")])
    assert lines == ['PRAUTO$v$a$c1 = "3"\n', 'PRAUTO_v_a = "3"\n']
    assert [bad["checksum"] for bad in unwritable] == ["c 2", "c3"]


def test_export_all_unwritable():
    bad = [row("v", "a", "c", "x"), row("v$", "a", "c", "1")]
    assert export_lines(bad, lockdown=True) == ([LOCKDOWN_LINE], bad)


def last_assignments_in(lines):
    """Each ``PRAUTO$`` variable's value as bitbake's parser sees it: the last assignment wins."""
    values = {}
    for line in "".join(lines).splitlines():
        if line.startswith("PRAUTO$"):
            name, value = line.split(" = ")
            values[name] = value.strip('"')
    return values


def test_export_rows_of_one_checksum_in_numeric_order():
    # the server's export sorts values as text: "12" before "9", "1.10" before "1.9"
    data = [row("v", "a", "c1", "12"), row("v", "a", "c1", "9"),
            row("v", "a", "c2", "1.10"), row("v", "a", "c2", "1.9"),
            row("v", "a", "c3", "1.0"), row("v", "a", "c3", "1"),
            row("v", "b", "c1", "3"),
            row("w", "a", "c1", "2.0.10"), row("w", "a", "c1", "2.0.9"), row("w", "a", "c1", "10")]
    lines, unwritable = export_lines(data)
    assert unwritable == []
    assert lines == [
        'PRAUTO$v$a$c1 = "9"\n', 'PRAUTO$v$a$c1 = "12"\n',
        'PRAUTO$v$a$c2 = "1.9"\n', 'PRAUTO$v$a$c2 = "1.10"\n',
        'PRAUTO$v$a$c3 = "1"\n', 'PRAUTO$v$a$c3 = "1.0"\n',
        'PRAUTO$v$b$c1 = "3"\n',
        'PRAUTO$w$a$c1 = "2.0.9"\n', 'PRAUTO$w$a$c1 = "2.0.10"\n', 'PRAUTO$w$a$c1 = "10"\n',
        'PRAUTO_v_a = "12"\n', 'PRAUTO_v_b = "3"\n', 'PRAUTO_w_a = "10"\n',
    ]
    assert last_assignments_in(lines) == {"PRAUTO$v$a$c1": "12", "PRAUTO$v$a$c2": "1.10",
                                          "PRAUTO$v$a$c3": "1.0", "PRAUTO$v$b$c1": "3",
                                          "PRAUTO$w$a$c1": "10"}


def test_export_rows_of_one_checksum_together_when_interleaved():
    # a checksum's rows are written together where it first appears, in numeric order
    data = [row("v", "a", "c1", "12"), row("v", "a", "c2", "5"), row("v", "a", "c1", "9"),
            row("v", "a", "c2", "4"), row("v", "a", "c3", "0")]
    lines, _ = export_lines(data, nomax=True)
    assert lines == ['PRAUTO$v$a$c1 = "9"\n', 'PRAUTO$v$a$c1 = "12"\n',
                     'PRAUTO$v$a$c2 = "4"\n', 'PRAUTO$v$a$c2 = "5"\n', 'PRAUTO$v$a$c3 = "0"\n']


# --------------------------------------------------------------------------- round trip

def test_round_trip_exact():
    lines, _ = export_lines(DATA, METAINFO, lockdown=True)
    rows, problems = split(read_rows(as_file(lines)))
    assert problems == []
    assert rows == [Row(r["version"], r["pkgarch"], r["checksum"], r["value"], number)
                    for number, r in enumerate(DATA, 1)]
    assert [r.value for r in rows] == ["1.3", "9", "1.20", "1.0.3", "10", "1", "1.0", "2", "0"]


def test_round_trip_straight_from_export_list():
    # read_rows also takes export_lines' list as it is
    lines, _ = export_lines(DATA, METAINFO, lockdown=True)
    assert list(read_rows(lines)) == list(read_rows(as_file(lines)))


def test_round_trip_skips_unwritable():
    data = [row("v", "a", "c1", "1.0.3"), row("v", "a", "c 2", "2"), row("v", "a", "c3", "4.5")]
    lines, unwritable = export_lines(data)
    assert unwritable == [data[1]]
    assert list(read_rows(as_file(lines))) == [Row("v", "a", "c1", "1.0.3", 1), Row("v", "a", "c3", "4.5", 2)]


def test_round_trip_odd_but_writable_fields():
    data = [row("v=1", "a", "sha256:abc=", "1"), row("#v", "a-b_c.d", "x'y", "2"),
            row("1.0+git", "all", "c" * 64, "3.0.0")]
    lines, unwritable = export_lines(data, nomax=True)
    assert unwritable == []
    assert list(read_rows(as_file(lines))) == [
        Row("v=1", "a", "sha256:abc=", "1", 1), Row("#v", "a-b_c.d", "x'y", "2", 2),
        Row("1.0+git", "all", "c" * 64, "3.0.0", 3)]


def test_round_trip_empty_field():
    data = [row("", "a", "c", "1"), row("v", "", "c", "1"), row("v", "a", "", "1")]
    lines, unwritable = export_lines(data)
    rows, problems = split(read_rows(as_file(lines)))
    assert problems == []
    assert len(rows) + len(unwritable) == len(data)


def test_round_trip_ten_thousand_rows():
    data = [row("pkg-%d" % (i % 97), "arch%d" % (i % 3), "%064x" % i,
                "%d.%d" % (i // 100, i % 100) if i % 2 else str(i)) for i in range(10000)]
    lines, unwritable = export_lines(data, METAINFO, lockdown=True)
    assert unwritable == []
    assert len(lines) == 10000 + 97 * 3 + len(METAINFO_LINES) + 1
    rows, problems = split(read_rows(as_file(lines)))
    assert problems == []
    assert len(rows) == 10000
    assert rows[0] == Row("pkg-0", "arch0", "0" * 64, "0", 1)
    assert rows[-1] == Row("pkg-8", "arch0", "%064x" % 9999, "99.99", 10000)
    assert rows[4321] == Row("pkg-53", "arch1", "%064x" % 4321, "43.21", 4322)
    assert [(r.version, r.pkgarch, r.checksum, r.value) for r in rows] == [
        (d["version"], d["pkgarch"], d["checksum"], d["value"]) for d in data]


# --------------------------------------------------------------------------- reading

def test_read_blocks_in_any_order():
    text = [
        "\n",                                           # 1
        '#PR_core_ver = "2.19.0"\n',                    # 2
        "\n",                                           # 3
        "#Table: PRMAIN\n",                             # 4
        "#name      \t type    \t notn    \t dflt    \t pk\n",  # 5
        'PRAUTO_v_a = "7"\n',                           # 6
        'PRAUTO$v$a$c1 = "7"\n',                        # 7
        'PRSERV_LOCKDOWN = "1"\n',                      # 8
        "   # indented comment\n",                      # 9
        '    PRAUTO$v$a$c2 = "1.0.3"   \n',             # 10
        '\tPRAUTO$w$b$c3="3"\n',                        # 11
        'PRAUTO$w$b$c4   =   "4"\n',                    # 12
        "\t \n",                                        # 13
        'PRAUTO_w_b = "4"\n',                           # 14
        'PRAUTO$w$b$c5 = "0"',                          # 15 (no final newline)
    ]
    assert list(read_rows(text)) == [
        Row("v", "a", "c1", "7", 7),
        Row("v", "a", "c2", "1.0.3", 10),
        Row("w", "b", "c3", "3", 11),
        Row("w", "b", "c4", "4", 12),
        Row("w", "b", "c5", "0", 15),
    ]


@pytest.mark.parametrize("line", ['PRAUTO$v$a$c="3"', 'PRAUTO$v$a$c   =   "3"', 'PRAUTO$v$a$c = "3"',
                                  'PRAUTO$v$a$c\t=\t"3"\t', '  PRAUTO$v$a$c= "3"\r\n'])
def test_read_spacing_around_equals(line):
    assert list(read_rows([line])) == [Row("v", "a", "c", "3", 1)]


def test_read_prauto_max_and_lockdown_are_silent():
    assert list(read_rows(['PRAUTO_v_a = "3"\n', 'PRSERV_LOCKDOWN = "1"\n', 'PRAUTO_x = "junk"\n',
                           'PRSERV_LOCKDOWN = "0"\n'])) == []


def test_read_comments_and_blanks_only():
    assert list(read_rows(["# a\n", "\n", "   \n", "#PRAUTO$v$a$c = \"abc\"\n", "#junk junk\n"])) == []


def test_read_empty():
    assert list(read_rows([])) == []


def test_read_is_lazy():
    def lines():
        yield 'PRAUTO$v$a$c = "1"\n'
        raise AssertionError("read past the first row")

    assert next(iter(read_rows(lines()))) == Row("v", "a", "c", "1", 1)


@pytest.mark.parametrize("line, reason", [
    ("PRAUTO$v$a$c\n", 'not a NAME = "VALUE" assignment: PRAUTO$v$a$c'),
    ("PRAUTO$v$a$c = 3\n", 'not a NAME = "VALUE" assignment: PRAUTO$v$a$c = 3'),
    ("PRAUTO$v$a$c = '3'\n", 'not a NAME = "VALUE" assignment: PRAUTO$v$a$c = \'3\''),
    ('PRAUTO$v$a$c = "3\n', 'not a NAME = "VALUE" assignment: PRAUTO$v$a$c = "3'),
    ('PRAUTO$v$a$c = "3" x\n', 'not a NAME = "VALUE" assignment: PRAUTO$v$a$c = "3" x'),
    ('PRAUTO$v$a$c = "3"4"\n', 'not a NAME = "VALUE" assignment: PRAUTO$v$a$c = "3"4"'),
    ('export PRAUTO$v$a$c = "3"\n', 'not a NAME = "VALUE" assignment: export PRAUTO$v$a$c = "3"'),
    ('= "3"\n', 'not a NAME = "VALUE" assignment: = "3"'),
    ('FOO = "1"\n', "unknown variable FOO"),
    ('PRAUTO = "1"\n', "unknown variable PRAUTO"),
    ('prauto$v$a$c = "1"\n', "unknown variable prauto$v$a$c"),
    ('PRAUTO$a$b = "1"\n', "expected PRAUTO$VERSION$PKGARCH$CHECKSUM, got PRAUTO$a$b"),
    ('PRAUTO$a$$c = "1"\n', "expected PRAUTO$VERSION$PKGARCH$CHECKSUM, got PRAUTO$a$$c"),
    ('PRAUTO$$a$c = "1"\n', "expected PRAUTO$VERSION$PKGARCH$CHECKSUM, got PRAUTO$$a$c"),
    ('PRAUTO$a$b$ = "1"\n', "expected PRAUTO$VERSION$PKGARCH$CHECKSUM, got PRAUTO$a$b$"),
    ('PRAUTO$a$b$c$d = "1"\n', "expected PRAUTO$VERSION$PKGARCH$CHECKSUM, got PRAUTO$a$b$c$d"),
    ('PRAUTO$ = "1"\n', "expected PRAUTO$VERSION$PKGARCH$CHECKSUM, got PRAUTO$"),
    ('PRAUTO$v$a$c = "abc"\n', "value 'abc' is not a revision (dotted non-negative integers)"),
    ('PRAUTO$v$a$c = "-1"\n', "value '-1' is not a revision (dotted non-negative integers)"),
    ('PRAUTO$v$a$c = "1."\n', "value '1.' is not a revision (dotted non-negative integers)"),
    ('PRAUTO$v$a$c = "01"\n', "value '01' is not a revision (dotted non-negative integers)"),
    ('PRAUTO$v$a$c = ""\n', "value '' is not a revision (dotted non-negative integers)"),
    ('PRAUTO$v$a$c = " 1"\n', "value ' 1' is not a revision (dotted non-negative integers)"),
    ('PRAUTO$v$a$c = "1.01"\n', "value '1.01' is not a revision (dotted non-negative integers)"),
    ('PRAUTO$v$a$c = "+7"\n', "value '+7' is not a revision (dotted non-negative integers)"),
])
def test_read_problem_reasons(line, reason):
    assert list(read_rows([line])) == [Problem(1, reason)]


def test_read_problem_key_words():
    lines = [
        'PRAUTO$v$a$ok1 = "1"\n',     # 1
        "garbage\n",                  # 2
        'FOO = "1"\n',                # 3
        'PRAUTO$a$b = "1"\n',         # 4
        "\n",                         # 5
        'PRAUTO$a$$c = "1"\n',        # 6
        'PRAUTO$a$b$c$d = "1"\n',     # 7
        'PRAUTO$v$a$c = "abc"\n',     # 8
        'PRAUTO$v$a$c = "-1"\n',      # 9
        "# comment\n",                # 10
        'PRAUTO$v$a$c = "1."\n',      # 11
        'PRAUTO$v$a$c = "01"\n',      # 12
        'PRAUTO$v$a$c = ""\n',        # 13
        'PRAUTO$v$a$ok2 = "2.0"\n',   # 14
    ]
    rows, problems = split(read_rows(lines))
    assert rows == [Row("v", "a", "ok1", "1", 1), Row("v", "a", "ok2", "2.0", 14)]
    assert [problem.line for problem in problems] == [2, 3, 4, 6, 7, 8, 9, 11, 12, 13]
    words = ["assignment", "unknown variable"] + [REASON_FIELDS] * 3 + ["not a revision"] * 5
    for problem, word in zip(problems, words):
        assert word in problem.reason, (problem, word)
    assert problems[0].reason.startswith(REASON_ASSIGNMENT)


def test_read_order_of_rows_and_problems_follows_lines():
    items = list(read_rows(['PRAUTO$v$a$c = "x"\n', 'PRAUTO$v$a$c = "1"\n', 'BAR = "1"\n']))
    assert items == [Problem(1, "value 'x' is not a revision (dotted non-negative integers)"),
                     Row("v", "a", "c", "1", 2), Problem(3, "unknown variable BAR")]


def test_read_long_line_is_shortened():
    line = "x" * 300
    assert list(read_rows([line])) == [Problem(1, REASON_ASSIGNMENT + ": " + "x" * 97 + "...")]
    name = "Y" * 150
    assert list(read_rows(['%s = "1"' % name])) == [Problem(1, "unknown variable " + "Y" * 97 + "...")]


def test_read_line_numbers_count_every_line():
    lines = ["\n"] * 41 + ['PRAUTO$v$a$c = "5"\n'] + ["# c\n"] * 58 + ['nope\n']
    assert list(read_rows(lines)) == [Row("v", "a", "c", "5", 42),
                                      Problem(101, REASON_ASSIGNMENT + ": nope")]


def test_read_from_file(tmp_path):
    lines, _ = export_lines(DATA, METAINFO, lockdown=True)
    path = tmp_path / "export.conf"
    path.write_text("".join(lines) + 'PRAUTO$v$a$c = "bad"\n')
    with open(str(path)) as f:
        rows, problems = split(read_rows(f))
    assert len(rows) == len(DATA)
    assert rows[-1] == Row("glibc-2.39", "armv8a", "iii", "0", 9)
    # 9 rows + 4 maxima + 11 metainfo lines (one element holds two) + 2 lockdown lines
    assert problems == [Problem(9 + 4 + 11 + 2 + 1,
                                "value 'bad' is not a revision (dotted non-negative integers)")]


# --------------------------------------------------------------------------- duplicated variables

def test_last_assignments_collapse_duplicates_keeping_the_last():
    lines = [
        'PRAUTO$v$a$c1 = "1"\n',     # 1  overridden by line 5
        'PRAUTO$v$a$c2 = "7"\n',     # 2
        'PRAUTO$v$a$c1 = "3"\n',     # 3  overridden by line 5
        "garbage\n",                 # 4
        'PRAUTO$v$a$c1 = "2"\n',     # 5  counts: a lower value, but the last
        'PRAUTO$v$b$c1 = "4"\n',     # 6  another variable (pkgarch b)
        'PRAUTO$v$a$c2 = "7"\n',     # 7  the same value again
    ]
    rows, problems, duplicates = oefile.last_assignments(read_rows(lines))
    assert rows == [Row("v", "a", "c1", "2", 5), Row("v", "b", "c1", "4", 6), Row("v", "a", "c2", "7", 7)]
    assert problems == [Problem(4, REASON_ASSIGNMENT + ": garbage")]
    assert duplicates == 3


def test_last_assignments_an_unusable_last_value_wins_too():
    # bitbake keeps the last assignment whatever it holds: a valid value overridden by an
    # unusable one is not imported, an unusable value overridden by a valid one is no problem
    lines = ['PRAUTO$v$a$c1 = "1"\n', 'PRAUTO$v$a$c2 = "x"\n',
             'PRAUTO$v$a$c1 = "y"\n', 'PRAUTO$v$a$c2 = "2"\n']
    rows, problems, duplicates = oefile.last_assignments(read_rows(lines))
    assert rows == [Row("v", "a", "c2", "2", 4)]
    assert problems == [Problem(3, "value 'y' is not a revision (dotted non-negative integers)")]
    assert duplicates == 2


def test_last_assignments_without_duplicates_change_nothing():
    lines, _ = export_lines(DATA, METAINFO, lockdown=True)
    items = list(read_rows(as_file(lines) + ["junk\n"]))
    rows, problems, duplicates = oefile.last_assignments(items)
    assert rows == [item for item in items if isinstance(item, Row)]
    assert problems == [item for item in items if isinstance(item, Problem)]
    assert duplicates == 0
