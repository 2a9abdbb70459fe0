//! Static zones: the RFC 1035 zone files of one directory, each named `<origin>.zone`
//! (`cluster.internal.zone` is the zone `cluster.internal.`), parsed with hickory's zone-file
//! parser and served by its file zone handler from the `Catalog`, beside the Consul domain.
//!
//! At start a zone that does not load stops the server with the file, line and reason; on
//! reload (SIGHUP) such a zone keeps its previous version and the reason is returned for the
//! log.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hickory_server::proto::rr::{LowerName, Name, RecordType, RrKey};
use hickory_server::proto::serialize::txt::{LexerError, ParseError, Parser};
use hickory_server::store::file::FileZoneHandler;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

/// The file name suffix of zone files.
pub const ZONE_SUFFIX: &str = ".zone";

/// Why a zone (or the zones directory) could not be loaded. `Display` is one line that
/// names the file (and the line, when known).
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The directory could not be listed.
    #[error("zones directory {}: {source}", .dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A zone file could not be read.
    #[error("zone file {}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A zone file is not valid zone-file syntax.
    #[error("zone file {}: {reason}", location(.path, .line))]
    Parse {
        path: PathBuf,
        /// 1-based line where the error was found, when known.
        line: Option<usize>,
        reason: String,
    },
    /// The file parsed but cannot be served as named (no SOA, records outside the origin,
    /// a name that is not a domain, inside the Consul domain, ...).
    #[error("zone file {}: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl ZoneError {
    /// The zone file (or directory) concerned.
    pub fn path(&self) -> &Path {
        match self {
            ZoneError::Dir { dir, .. } => dir,
            ZoneError::Read { path, .. }
            | ZoneError::Parse { path, .. }
            | ZoneError::Invalid { path, .. } => path,
        }
    }
}

fn location<'a>(path: &'a Path, line: &Option<usize>) -> Location<'a> {
    Location { path, line: *line }
}

struct Location<'a> {
    path: &'a Path,
    line: Option<usize>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        Ok(())
    }
}

/// One loaded zone.
#[derive(Clone)]
pub struct StaticZone {
    pub origin: Name,
    pub path: PathBuf,
    /// Number of records (RRsets' records) in the zone.
    pub records: usize,
    pub handler: Arc<dyn ZoneHandler>,
}

/// The zones of one directory, by origin.
#[derive(Clone, Default)]
pub struct ZoneSet {
    zones: BTreeMap<LowerName, StaticZone>,
}

/// The outcome of a reload.
pub struct Reload {
    /// The zones to serve from now on.
    pub zones: ZoneSet,
    /// Zones (or the directory) that failed: each kept its previous version, if any.
    pub errors: Vec<ZoneError>,
    /// Origins no longer served because their file is gone.
    pub removed: Vec<Name>,
}

impl ZoneSet {
    /// Loads every `*.zone` file of `dir`; the first zone that fails stops the load.
    /// `reserved` are the Consul domains: a zone at or below one of them is an error.
    pub async fn load(dir: &Path, reserved: &[Name]) -> Result<ZoneSet, ZoneError> {
        let mut set = ZoneSet::default();
        for (origin, path) in zone_files(dir)? {
            let zone = load_zone(&path, origin, reserved).await?;
            set.zones.insert(LowerName::new(&zone.origin), zone);
        }
        Ok(set)
    }

    /// Loads `dir` again. A zone that fails keeps its previous version (a new file that
    /// fails is not served); a zone whose file is gone is dropped; if the directory cannot
    /// be listed, every zone is kept.
    pub async fn reload(&self, dir: &Path, reserved: &[Name]) -> Reload {
        let files = match zone_files(dir) {
            Ok(files) => files,
            Err(e) => {
                return Reload {
                    zones: self.clone(),
                    errors: vec![e],
                    removed: Vec::new(),
                }
            }
        };
        let mut zones = BTreeMap::new();
        let mut errors = Vec::new();
        for (origin, path) in files {
            let key = LowerName::new(&origin);
            match load_zone(&path, origin, reserved).await {
                Ok(zone) => {
                    zones.insert(key, zone);
                }
                Err(e) => {
                    if let Some(previous) = self.zones.get(&key) {
                        zones.insert(key, previous.clone());
                    }
                    errors.push(e);
                }
            }
        }
        let removed = self
            .zones
            .iter()
            .filter(|(k, _)| !zones.contains_key(*k))
            .map(|(_, z)| z.origin.clone())
            .collect();
        Reload {
            zones: ZoneSet { zones },
            errors,
            removed,
        }
    }

    /// The loaded zones, ordered by origin.
    pub fn zones(&self) -> impl Iterator<Item = &StaticZone> {
        self.zones.values()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    /// Registers every zone in `catalog`.
    pub fn register(&self, catalog: &mut Catalog) {
        for (origin, zone) in &self.zones {
            catalog.upsert(origin.clone(), vec![Arc::clone(&zone.handler)]);
        }
    }
}

/// The `*.zone` files of `dir` with the origin their name gives, sorted by file name.
/// Hidden files and other names are skipped.
fn zone_files(dir: &Path) -> Result<Vec<(Name, PathBuf)>, ZoneError> {
    let dir_err = |source| ZoneError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_err)? {
        let entry = entry.map_err(dir_err)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') || path.is_dir() {
            continue;
        }
        let Some(stem) = name.strip_suffix(ZONE_SUFFIX) else {
            continue;
        };
        let origin = origin_from_file_name(stem).map_err(|reason| ZoneError::Invalid {
            path: path.clone(),
            reason,
        })?;
        out.push((origin, path));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// `cluster.internal` → `cluster.internal.`.
pub fn origin_from_file_name(stem: &str) -> Result<Name, String> {
    let bad = |why: &str| {
        format!(
            "the file name must be <origin>{ZONE_SUFFIX}, e.g. cluster.internal{ZONE_SUFFIX}; \
             {stem:?} {why}"
        )
    };
    if stem.is_empty() || stem.ends_with('.') {
        return Err(bad("is not a domain name"));
    }
    let name = Name::from_ascii(stem).map_err(|e| bad(&format!("is not a domain name ({e})")))?;
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    Ok(name)
}

async fn load_zone(path: &Path, origin: Name, reserved: &[Name]) -> Result<StaticZone, ZoneError> {
    let text = std::fs::read_to_string(path).map_err(|source| ZoneError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    zone_from_text(path, origin, &text, reserved).await
}

/// The zone `origin` from `text`, the contents of its file `path` (named in errors, and
/// the directory relative `$INCLUDE`s are read from).
pub async fn zone_from_text(
    path: &Path,
    origin: Name,
    text: &str,
    reserved: &[Name],
) -> Result<StaticZone, ZoneError> {
    reserved_check(path, &origin, reserved)?;
    let records = match Parser::new(text, Some(path.to_path_buf()), Some(origin.clone())).parse() {
        Ok((_, records)) => records,
        Err(e) => {
            return Err(ZoneError::Parse {
                path: path.to_path_buf(),
                line: error_line(text, path, &origin, &e),
                reason: e.to_string(),
            })
        }
    };
    let invalid = |reason: String| ZoneError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(key) = records
        .keys()
        .find(|k| !origin.zone_of(&Name::from(&k.name)))
    {
        return Err(invalid(format!(
            "{} {} is outside the zone {origin} (the file name sets the origin)",
            key.name, key.record_type
        )));
    }
    if !records.contains_key(&RrKey::new(LowerName::new(&origin), RecordType::SOA)) {
        return Err(invalid(format!(
            "no SOA record at the origin {origin} (the file name sets the origin)"
        )));
    }
    let count = records
        .values()
        .map(|rrset| rrset.records_without_rrsigs().count())
        .sum();
    let in_memory =
        InMemoryZoneHandler::new(origin.clone(), records, ZoneType::Primary, AxfrPolicy::Deny)
            .map_err(invalid)?;
    let handler: Arc<dyn ZoneHandler> = Arc::new(FileZoneHandler::new(in_memory).await);
    Ok(StaticZone {
        origin,
        path: path.to_path_buf(),
        records: count,
        handler,
    })
}

/// A zone at or below a Consul domain is refused.
fn reserved_check(path: &Path, origin: &Name, reserved: &[Name]) -> Result<(), ZoneError> {
    match reserved.iter().find(|d| d.zone_of(origin)) {
        Some(domain) => Err(ZoneError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "the zone {origin} is inside the Consul domain {domain}, which consul-dns \
                 answers itself"
            ),
        }),
        None => Ok(()),
    }
}

/// hickory's parser does not say where an error is. An unclosed `(` or `"` is reported at
/// the line that opened it; any other error at the first line whose prefix of the file
/// gives the same error (the parser reads the file in order, so that is where it failed).
fn error_line(text: &str, path: &Path, origin: &Name, error: &ParseError) -> Option<usize> {
    if matches!(
        error,
        ParseError::Lexer(
            LexerError::UnclosedList | LexerError::UnclosedQuotedString | LexerError::EOF
        )
    ) {
        if let Some(line) = unclosed_open_line(text) {
            return Some(line);
        }
    }
    let message = error.to_string();
    // Byte offsets of the end of each line (after its newline).
    let ends: Vec<usize> = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain((!text.ends_with('\n') && !text.is_empty()).then_some(text.len()))
        .collect();
    let fails = |lines: usize| {
        let prefix = &text[..ends[lines - 1]];
        Parser::new(prefix, Some(path.to_path_buf()), Some(origin.clone()))
            .parse()
            .err()
            .is_some_and(|e| e.to_string() == message)
    };
    if ends.is_empty() || !fails(ends.len()) {
        return None;
    }
    // The smallest number of lines that fails: binary search (failing is monotone past the
    // line at fault).
    let (mut lo, mut hi) = (1, ends.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fails(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// The line of a `(` or `"` that is never closed, ignoring comments.
fn unclosed_open_line(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut paren_line = None;
    let mut quote_line = None;
    for (n, line) in text.lines().enumerate() {
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if quote_line.is_some() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => quote_line = None,
                    _ => {}
                }
                continue;
            }
            match c {
                ';' => break,
                '\\' => {
                    chars.next();
                }
                '"' => quote_line = Some(n + 1),
                '(' => {
                    if depth == 0 {
                        paren_line = Some(n + 1);
                    }
                    depth += 1;
                }
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    quote_line.or(if depth > 0 { paren_line } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::from_ascii("example.internal.").unwrap_or_else(|_| Name::root())
    }

    fn parse_error(text: &str) -> (Option<usize>, String) {
        let path = Path::new("/nonexistent/example.internal.zone");
        match Parser::new(text, Some(path.to_path_buf()), Some(origin())).parse() {
            Ok(_) => panic!("should not parse:\n{text}"),
            Err(e) => (error_line(text, path, &origin(), &e), e.to_string()),
        }
    }

    const GOOD: &str = "\
$TTL 60
@   IN SOA ns hostmaster (
        1   ; serial
        3600 600 86400 60 )
    IN NS ns
ns  IN A 192.0.2.1
www IN A 192.0.2.2
";

    #[test]
    fn good_zone_parses() {
        let path = Path::new("/nonexistent/example.internal.zone");
        let parsed = Parser::new(GOOD, Some(path.to_path_buf()), Some(origin())).parse();
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn error_lines() {
        let bad_ip = format!("{GOOD}db  IN A 192.0.2.300\nx IN A 192.0.2.3\n");
        assert_eq!(
            parse_error(&bad_ip).0,
            Some(8),
            "{:?}",
            parse_error(&bad_ip)
        );

        let bad_type = format!("{GOOD}db  IN BOGUS 1\n");
        assert_eq!(parse_error(&bad_type).0, Some(8));

        let no_newline = format!("{GOOD}db  IN A nope");
        assert_eq!(parse_error(&no_newline).0, Some(8));

        let unclosed = "$TTL 60\n@ IN SOA ns hostmaster ( 1 2 3 4 5\nns IN A 192.0.2.1\n";
        assert_eq!(
            parse_error(unclosed).0,
            Some(2),
            "{:?}",
            parse_error(unclosed)
        );

        let quote = format!("{GOOD}t IN TXT \"never closed\n");
        assert_eq!(parse_error(&quote).0, Some(8), "{:?}", parse_error(&quote));
    }

    #[test]
    fn unclosed_scanner_ignores_comments_and_quotes() {
        assert_eq!(unclosed_open_line("a ; (\nb \"(\" c\n"), None);
        assert_eq!(unclosed_open_line("a\nb (\nc\n"), Some(2));
        assert_eq!(unclosed_open_line("a (\n)\nb \"x\n"), Some(3));
    }

    #[test]
    fn file_names() {
        assert_eq!(
            origin_from_file_name("Cluster.Internal").map(|n| n.to_string()),
            Ok("cluster.internal.".to_string())
        );
        assert!(origin_from_file_name("").is_err());
        assert!(origin_from_file_name("a..b").is_err());
        assert!(origin_from_file_name("trailing.").is_err());
    }
}
