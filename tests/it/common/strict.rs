//! A strict reading of a DNS message with NLnet Labs' `domain` (not hickory, which builds
//! our replies): shared by the tests (`common::decode`) and the `request` fuzz target.

/// The number of entries in each section of `bytes` (question, answer, authority,
/// additional), read with `domain`; an error for a message a strict parser rejects.
pub fn strict_counts(bytes: &[u8]) -> Result<[usize; 4], String> {
    use domain::base::iana::Rtype;
    use domain::base::name::ParsedName;
    use domain::rdata::AllRecordData;

    let msg = domain::base::Message::from_octets(bytes).map_err(|e| e.to_string())?;
    let header = msg.header_counts();
    let mut counts = [0usize; 4];
    let mut questions = msg.question();
    for q in questions.by_ref() {
        q.map_err(|e| format!("question: {e}"))?;
        counts[0] += 1;
    }
    let mut section = questions.answer().map_err(|e| format!("question: {e}"))?;
    let mut opts = 0;
    for (i, name) in [(1, "answer"), (2, "authority"), (3, "additional")] {
        for record in section.by_ref() {
            let record = record.map_err(|e| format!("{name} record {}: {e}", counts[i]))?;
            record
                .to_any_record::<AllRecordData<_, ParsedName<_>>>()
                .map_err(|e| format!("{name} record {} data: {e}", counts[i]))?;
            if record.rtype() == Rtype::OPT {
                if i != 3 || !record.owner().is_root() {
                    return Err(format!(
                        "an OPT record in the {name} section or not at the root"
                    ));
                }
                opts += 1;
            }
            counts[i] += 1;
        }
        if i < 3 {
            section = section
                .next_section()
                .map_err(|e| format!("{name}: {e}"))?
                .ok_or_else(|| format!("no section after {name}"))?;
        }
    }
    if opts > 1 {
        return Err(format!("{opts} OPT records"));
    }
    let want = [
        header.qdcount(),
        header.ancount(),
        header.nscount(),
        header.arcount(),
    ]
    .map(usize::from);
    if counts != want {
        return Err(format!("header counts {want:?}, sections hold {counts:?}"));
    }
    if section.pos() != bytes.len() {
        return Err(format!(
            "{} bytes after the last record",
            bytes.len() - section.pos()
        ));
    }
    Ok(counts)
}
