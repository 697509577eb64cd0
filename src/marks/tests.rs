use super::*;

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

fn ts(s: u64) -> Vec<u8> {
    format!("#TS:{s}\r\n").into_bytes()
}

/// A file as Redis writes it with marks on: (bytes, offsets of the marks).
fn file() -> (Vec<u8>, Vec<Mark>) {
    let mut f = Vec::new();
    let mut marks = Vec::new();
    let mut mark = |f: &mut Vec<u8>, s| {
        marks.push(Mark {
            offset: f.len() as u64,
            second: s,
        });
        f.extend(ts(s));
    };
    mark(&mut f, 100);
    f.extend(cmd(&["SELECT", "0"]));
    f.extend(cmd(&["SET", "a", "1"]));
    mark(&mut f, 101);
    // A value that looks like a mark is a value.
    f.extend(cmd(&["SET", "b", "x\r\n#TS:999\r\n*1\r\n"]));
    f.extend(cmd(&["SET", "c", ""]));
    mark(&mut f, 103);
    f.extend(cmd(&["DEL", "a"]));
    (f, marks)
}

#[test]
fn marks_are_found_at_command_boundaries_however_the_bytes_are_split() {
    let (f, want) = file();
    let mut whole = Scanner::new();
    let got: Vec<Mark> = whole.feed(&f).into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, want);
    assert!(whole.at_boundary() && !whole.lost());
    assert_eq!(whole.last_second, Some(103));
    for cut in 0..=f.len() {
        let mut s = Scanner::new();
        let mut got = s.feed(&f[..cut]);
        got.extend(s.feed(&f[cut..]));
        let got: Vec<Mark> = got.into_iter().map(|(m, _)| m).collect();
        assert_eq!(got, want, "split at {cut}");
        assert_eq!(s, whole, "split at {cut}");
    }
    // Byte by byte, with the mark before each.
    let mut s = Scanner::new();
    let got: Vec<(Mark, Option<u64>)> = f.chunks(1).flat_map(|b| s.feed(b)).collect();
    let before: Vec<Option<u64>> = got.iter().map(|(_, p)| *p).collect();
    assert_eq!(before, [None, Some(100), Some(101)]);
}

#[test]
fn a_cut_inside_a_command_or_a_transaction_is_not_a_boundary() {
    let mut s = Scanner::new();
    let set = cmd(&["SET", "k", "v"]);
    s.feed(&set[..5]);
    assert!(!s.at_boundary());
    s.feed(&set[5..]);
    assert!(s.at_boundary());
    let mut tx = cmd(&["MULTI"]);
    tx.extend(ts(7));
    tx.extend(cmd(&["INCR", "n"]));
    let marks = s.feed(&tx);
    assert!(marks.is_empty(), "a mark inside MULTI is no point");
    assert!(!s.at_boundary());
    assert_eq!(s.last_second, Some(7));
    s.feed(&cmd(&["exec"]));
    assert!(s.at_boundary());
    assert_eq!(s.feed(&ts(8)).len(), 1);
}

#[test]
fn bytes_that_are_not_resp_stop_the_scanner_for_good() {
    for bad in [
        &b"SET a 1\r\n"[..],
        b"*x\r\n",
        b"*1\r\n+OK\r\n",
        b"*1\r\n$1\r\nab\r\n",
    ] {
        let mut s = Scanner::new();
        let mut bytes = bad.to_vec();
        bytes.extend(ts(5));
        assert!(s.feed(&bytes).is_empty(), "{bad:?}");
        assert!(s.lost() && !s.at_boundary());
        assert!(s.feed(&ts(6)).is_empty());
    }
    // Other annotations are skipped, however long.
    let mut s = Scanner::new();
    let mut bytes = format!("#{}\r\n", "x".repeat(500)).into_bytes();
    bytes.extend(ts(5));
    assert_eq!(s.feed(&bytes).len(), 1);
    for not_a_mark in ["#TS:\r\n", "#TS:12a\r\n", "#TS:5\n", "#ts:5\r\n"] {
        let mut s = Scanner::new();
        assert!(s.feed(not_a_mark.as_bytes()).is_empty(), "{not_a_mark}");
        assert_eq!(s.last_second, None);
    }
}

#[test]
fn points_are_labelled_by_the_second_before_each_mark_inside_the_window() {
    let m = |offset, second| Mark { offset, second };
    let marks = [
        (m(10, 101), Some(100)),
        (m(20, 105), Some(101)),
        (m(30, 106), Some(105)),
    ];
    // Marks 101, 105 and 106 cut at 10, 20 and 30; the end (40) holds second 106 whole.
    assert_eq!(
        points(&marks, Some(106), (0, 40), 0, 200_000),
        [(10, 100_999), (20, 101_999), (30, 105_999), (40, 106_999)]
    );
    // Only inside the window after the last point and before the look.
    assert_eq!(
        points(&marks, Some(106), (0, 40), 101_999, 106_500),
        [(30, 105_999)]
    );
    // A mark at the range's start is the point before; one with no mark before it is
    // labelled by its own second.
    assert_eq!(
        points(
            &[(m(0, 101), Some(100)), (m(5, 102), None)],
            None,
            (0, 9),
            0,
            1 << 40
        ),
        [(5, 101_999)]
    );
    // A mark whose second the clock says is not over when looked at is no point, and a
    // label that does not move forward is dropped.
    assert_eq!(points(&marks, None, (0, 40), 0, 101_999), [(10, 100_999)]);
    assert_eq!(
        points(
            &[(m(10, 5), Some(4)), (m(20, 6), Some(3))],
            None,
            (0, 40),
            0,
            1 << 40
        ),
        [(10, 4_999)]
    );
    assert!(points(&[], None, (0, 40), 0, 1 << 40).is_empty());
}
