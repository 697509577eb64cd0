use super::*;

fn keys() -> (Identities, age::x25519::Recipient) {
    let k = age::x25519::Identity::generate();
    let r = k.to_public();
    (
        Identities {
            keys: vec![k],
            file: "key.txt".into(),
        },
        r,
    )
}

/// Units of `chunks` sealed by `s`, back to back, and their stored lengths.
fn sealed(s: &Sealer, chunks: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
    let (mut body, mut units) = (Vec::new(), Vec::new());
    for c in chunks {
        let u = s.seal_unit(c).unwrap();
        units.push(u.len() as u64);
        body.extend_from_slice(&u);
    }
    (body, units)
}

fn open_all(
    body: &[u8],
    seal: Seal,
    units: &[u64],
    ids: Option<&Identities>,
    expected: u64,
) -> Result<Vec<u8>, OpenError> {
    let mut out = Vec::new();
    open(
        &mut &body[..],
        seal,
        (units, body.len() as u64),
        (ids, expected),
        &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        },
    )?;
    Ok(out)
}

#[test]
fn every_seal_round_trips_unit_by_unit() {
    let (ids, r) = keys();
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("SET key:{} {}\n", i % 977, i).into_bytes())
        .collect();
    let chunks: [&[u8]; 3] = [&text[..10], b"", &text[10..]];
    for (level, recipients) in [
        (None, vec![]),
        (Some(3), vec![]),
        (None, vec![r.clone()]),
        (Some(1), vec![r.clone()]),
    ] {
        let s = Sealer { level, recipients };
        let (body, units) = sealed(&s, &chunks);
        let seal = s.seal();
        assert_eq!(
            open_all(&body, seal, &units, Some(&ids), text.len() as u64).unwrap(),
            text,
            "{seal:?}"
        );
        if seal.compressed() {
            assert!(body.len() < text.len() / 4, "{seal:?}: {}", body.len());
        }
        // A point inside: its unit alone opens to its own bytes.
        let from = units[0] + units[1];
        assert_eq!(
            open_all(
                &body[from as usize..],
                seal,
                &units[2..],
                Some(&ids),
                text.len() as u64 - 10
            )
            .unwrap(),
            &text[10..]
        );
    }
    // Frames back to back are what `zstd -d` reads: one stream.
    let s = Sealer {
        level: Some(3),
        recipients: vec![],
    };
    let (body, _) = sealed(&s, &chunks);
    assert_eq!(zstd::decode_all(&body[..]).unwrap(), text);
    assert_eq!(
        open_all(&body, Seal::Zstd, &[], None, text.len() as u64).unwrap(),
        text
    );
}

#[test]
fn failures_say_what_they_are() {
    let (ids, r) = keys();
    let (other, _) = keys();
    let s = Sealer {
        level: Some(3),
        recipients: vec![r],
    };
    let text = b"SET a 1\nSET b 2\n".repeat(1000);
    let (body, units) = sealed(&s, &[&text]);
    let n = text.len() as u64;
    let seal = s.seal();
    assert!(matches!(
        open_all(&body, seal, &units, None, n),
        Err(OpenError::NoIdentity)
    ));
    assert!(matches!(
        open_all(&body, seal, &units, Some(&other), n),
        Err(OpenError::WrongIdentity(_))
    ));
    let mut flipped = body.clone();
    let at = flipped.len() - 20;
    flipped[at] ^= 1;
    assert!(matches!(
        open_all(&flipped, seal, &units, Some(&ids), n),
        Err(OpenError::Damaged(_))
    ));
    // Another length than the key's: damage, not a partial success.
    assert!(matches!(
        open_all(&body, seal, &units, Some(&ids), n - 1),
        Err(OpenError::Damaged(_))
    ));
    assert!(matches!(
        open_all(&body, seal, &units, Some(&ids), n + 1),
        Err(OpenError::Damaged(_))
    ));
    // A body cut short by the network is a read to try again, not damage.
    let mut out = Vec::new();
    let cut = open(
        &mut &body[..body.len() - 5],
        seal,
        (&units, body.len() as u64),
        (Some(&ids), n),
        &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        },
    );
    assert!(matches!(cut, Err(OpenError::Read(_))), "{cut:?}");
    // zstd garbage.
    assert!(matches!(
        open_all(b"not zstd at all", Seal::Zstd, &[15], None, 3),
        Err(OpenError::Damaged(_))
    ));
}

#[test]
fn options_parse_and_refuse_with_words() {
    assert_eq!(parse_compress("off"), Ok(None));
    assert_eq!(parse_compress("zstd"), Ok(Some(DEFAULT_LEVEL)));
    assert_eq!(parse_compress("zstd:19"), Ok(Some(19)));
    for bad in ["", "gzip", "zstd:0", "zstd:20", "zstd:", "zstd:x", "on"] {
        assert!(
            parse_compress(bad).unwrap_err().contains("--compress"),
            "{bad}"
        );
    }
    let (k, r) = {
        let k = age::x25519::Identity::generate();
        let r = k.to_public();
        (k, r)
    };
    assert_eq!(
        parse_recipient(&r.to_string()).unwrap().to_string(),
        r.to_string()
    );
    assert!(parse_recipient("age1nope").unwrap_err().contains("age1"));
    // An identity file's bad line is named by number, never shown.
    use age::secrecy::ExposeSecret;
    let dir = std::env::temp_dir().join(format!("petrify-seal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("key.txt");
    let secret = k.to_string().expose_secret().to_string();
    std::fs::write(&f, format!("# created\n{secret}\n")).unwrap();
    assert_eq!(Identities::read(&f).unwrap().keys.len(), 1);
    std::fs::write(&f, format!("# created\n{}x\n", &secret[..secret.len() - 1])).unwrap();
    let e = Identities::read(&f).err().unwrap();
    assert!(e.contains("line 2") && !e.contains(&secret[..30]), "{e}");
    let rf = dir.join("recipients.txt");
    std::fs::write(&rf, format!("# ops\n\n{r}\n")).unwrap();
    assert_eq!(read_recipients(&rf).unwrap().len(), 1);
    std::fs::write(&rf, "# nobody\n").unwrap();
    assert!(read_recipients(&rf).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
