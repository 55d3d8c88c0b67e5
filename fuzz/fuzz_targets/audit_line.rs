//! The audit log reader on hostile text: `audit::parse_line` on every line of
//! the input (as a string) and `audit::verify_file` on the whole input
//! written to a file never panic; a chain that verifies has one record per
//! line, every one of its lines parses with seq = line number, and its MACs
//! are spelled exactly as `AuditLog` writes them (64 lowercase hex digits).
//!
//! The MAC key is the one `AuditLog` derives from the fixed data key
//! `[7u8; 32]`, so the seed corpus (real logs written by `AuditLog` with
//! that data key) verifies and the fuzzer can mutate valid chains.

#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vaultd::audit;
use vaultd::secret::SecretBuf;

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    key: SecretBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let data_key = SecretBuf::copy_from(&[7u8; 32]).expect("key");
        let key = audit::derive_key(&data_key).expect("derive");
        Fixture {
            _dir: dir,
            path,
            key,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = audit::parse_line(line);
    }
    let _ = audit::parse_line(&text);

    let f = fixture();
    let mut file = std::fs::File::create(&f.path).expect("create");
    file.write_all(data).expect("write");
    drop(file);
    let v = audit::verify_file(&f.path, &f.key);
    if v.problem.is_none() {
        // `verify_file` reads with BufRead::lines, which also splits "\r\n".
        let lines = std::str::from_utf8(data)
            .expect("a verified log is UTF-8")
            .lines()
            .count();
        assert_eq!(
            v.records as usize, lines,
            "verified {} records in {lines} lines",
            v.records
        );
        for (i, line) in std::str::from_utf8(data)
            .unwrap_or_default()
            .lines()
            .enumerate()
        {
            let record = audit::parse_line(line)
                .unwrap_or_else(|| panic!("a verified line does not parse: {line:?}"));
            assert_eq!(
                record.seq,
                i as u64 + 1,
                "verified line {} has seq {}",
                i + 1,
                record.seq
            );
            // The MAC is written as 64 lowercase hex digits; any other spelling
            // of the same value ("+f", "AB") is an edit verify must report.
            let mac = line
                .get(line.len() - 66..line.len() - 2)
                .unwrap_or_default();
            assert!(
                mac.len() == 64 && mac.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "a line whose MAC is not lowercase hex verified: {line:?}"
            );
        }
    }
});
