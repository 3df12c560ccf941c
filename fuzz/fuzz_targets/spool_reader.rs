//! Any bytes as a spool's first segment file and, when the first byte is
//! odd, its ledger (the last 24 bytes): opening recovers, and reading returns
//! each surviving record once, in sequence order, without panicking.
#![no_main]

use remaudit_client::spool::{Spool, SpoolSettings};

/// Size of the ledger file the spool writes.
const LEDGER_BYTES: usize = 24;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (segment, ledger) = if flags % 2 == 1 && rest.len() >= LEDGER_BYTES {
        let (segment, ledger) = rest.split_at(rest.len() - LEDGER_BYTES);
        (segment, Some(ledger))
    } else {
        (rest, None)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(format!("{:020}.seg", 1)), segment).expect("segment");
    if let Some(ledger) = ledger {
        std::fs::write(dir.path().join("ledger"), ledger).expect("ledger");
    }
    let Ok((spool, _recovery)) = Spool::open(SpoolSettings::new(dir.path())) else {
        return;
    };
    let mut reader = spool.reader();
    let (mut from, until) = (spool.first_unacked(), spool.next_seq());
    let mut last = None;
    while from < until {
        let Ok(records) = reader.read(from, until, 64, 1 << 20) else {
            return;
        };
        let Some(&(seq, _)) = records.last() else {
            break;
        };
        for (seq, _) in &records {
            assert!(last.is_none_or(|l| *seq > l), "records out of order or repeated");
            last = Some(*seq);
        }
        from = seq + 1;
    }
});
