//! TSIG (RFC 8945): requests verified and their responses signed (zone transfers, one or
//! many messages), requests signed and their responses verified (NOTIFY).
//!
//! Everything goes in and out as wire bytes, so a caller encodes with hickory as usual and
//! signs the bytes it is about to send. The MACs, the TSIG record and the digests are
//! hickory-proto's (`TSigner`, `message_tbs`, `encode_response_tbs`,
//! `signed_bitmessage_to_buf`); the one digest hickory has no function for, that of the
//! second and later messages of a response (RFC 8945 §5.3.1: prior MAC, message, timers
//! only), is laid out here with hickory's encoder.
//!
//! What to do with an unsigned request when a key is configured is the caller's decision
//! ([`RequestAuth::Unsigned`]). Nothing here logs: whatever comes from the network is
//! reported to the caller, which logs within its limits.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Header, Message, ResponseCode};
use hickory_proto::rr::rdata::tsig::{
    make_tsig_record, message_tbs, signed_bitmessage_to_buf, TsigAlgorithm, TsigError as TsigRcode,
    TSIG,
};
use hickory_proto::rr::{Name, Record, TSigner};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_proto::ProtoError;

/// The fudge (allowed clock difference, seconds) of the TSIG records made here.
pub const FUDGE: u16 = 300;

/// The largest DNS message (the TCP length prefix); longer input is not a message.
const MAX_MESSAGE: usize = u16::MAX as usize;

/// What went wrong with a key, a file, or a message to sign or verify.
#[derive(Debug, thiserror::Error)]
pub enum TsigError {
    #[error("TSIG key name {name:?}: {reason}")]
    KeyName { name: String, reason: String },
    #[error("TSIG key {name}: the secret is not base64: {reason}")]
    Secret { name: String, reason: String },
    #[error("TSIG key {name}: the secret is empty")]
    EmptySecret { name: String },
    #[error("unknown TSIG algorithm {0:?} (known: hmac-sha256, hmac-sha384, hmac-sha512)")]
    Algorithm(String),
    #[error("TSIG key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TSIG key file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error("not a DNS message: {0}")]
    Malformed(String),
    #[error("the message already carries a TSIG record")]
    AlreadySigned,
    #[error("the message with its TSIG record would be longer than 65535 bytes")]
    TooLarge,
    #[error("the response does not answer the request (ID {got}, expected {expected})")]
    IdMismatch { expected: u16, got: u16 },
    #[error("the response is not signed")]
    Unsigned,
    #[error("the response is signed with another key ({name} {algorithm})")]
    WrongKey { name: Name, algorithm: String },
    #[error("the response's MAC does not verify (BADSIG)")]
    BadSig,
    #[error("the response was signed at {signed}, more than {fudge} s from now ({now})")]
    BadTime { signed: u64, fudge: u16, now: u64 },
    #[error("the server rejected the request's TSIG: {}", rcode_name(*error))]
    Rejected { error: u16 },
    #[error(
        "the server rejected the request's time (BADTIME): its clock says {server_time:?}, the request said {request_time}"
    )]
    ServerBadTime {
        request_time: u64,
        server_time: Option<u64>,
    },
    #[error("TSIG: {0}")]
    Proto(#[from] ProtoError),
}

/// The name of a TSIG error code (RFC 8945 §3).
fn rcode_name(code: u16) -> String {
    match TsigRcode::from(code) {
        TsigRcode::BadSig => "BADSIG".into(),
        TsigRcode::BadKey => "BADKEY".into(),
        TsigRcode::BadTime => "BADTIME".into(),
        TsigRcode::BadTrunc => "BADTRUNC".into(),
        TsigRcode::Unknown(code) => format!("error {code}"),
    }
}

/// The HMAC of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    /// The algorithm's name, as in the TSIG record and in BIND's `algorithm`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }

    fn hickory(self) -> TsigAlgorithm {
        match self {
            Algorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            Algorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            Algorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        }
    }

    /// The algorithm of a received TSIG record. hickory knows the names in lower case
    /// only; another spelling is the same algorithm (names compare case-insensitively, and
    /// the MAC covers the name in lower case).
    fn of_record(algorithm: &TsigAlgorithm) -> Option<Algorithm> {
        match algorithm {
            TsigAlgorithm::HmacSha256 => Some(Algorithm::HmacSha256),
            TsigAlgorithm::HmacSha384 => Some(Algorithm::HmacSha384),
            TsigAlgorithm::HmacSha512 => Some(Algorithm::HmacSha512),
            TsigAlgorithm::Unknown(name) => name.to_ascii().parse().ok(),
            _ => None,
        }
    }
}

impl FromStr for Algorithm {
    type Err = TsigError;

    /// `hmac-sha256` (any case, trailing dot allowed).
    fn from_str(s: &str) -> Result<Self, TsigError> {
        let bare = s.trim().trim_end_matches('.');
        [
            Algorithm::HmacSha256,
            Algorithm::HmacSha384,
            Algorithm::HmacSha512,
        ]
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(bare))
        .ok_or_else(|| TsigError::Algorithm(s.to_string()))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A TSIG key: name, secret, algorithm. Its `Debug` leaves the secret out.
#[derive(Clone)]
pub struct TsigKey {
    signer: TSigner,
    algorithm: Algorithm,
}

impl TsigKey {
    /// An hmac-sha256 key. `secret_base64` is base64 as in BIND's `secret "..."`, NSD's
    /// and Knot's `secret:` (whitespace inside is ignored).
    pub fn new(name: &str, secret_base64: &str) -> Result<Self, TsigError> {
        Self::with_algorithm(name, secret_base64, Algorithm::HmacSha256)
    }

    /// A key of another algorithm.
    pub fn with_algorithm(
        name: &str,
        secret_base64: &str,
        algorithm: Algorithm,
    ) -> Result<Self, TsigError> {
        let key_name = key_name(name)?;
        let compact: String = secret_base64
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        if compact.is_empty() {
            return Err(TsigError::EmptySecret { name: name.into() });
        }
        let secret = data_encoding::BASE64
            .decode(compact.as_bytes())
            .map_err(|e| TsigError::Secret {
                name: name.into(),
                reason: e.to_string(),
            })?;
        if secret.is_empty() {
            return Err(TsigError::EmptySecret { name: name.into() });
        }
        let signer = TSigner::new(secret, algorithm.hickory(), key_name, FUDGE)
            .map_err(|_| TsigError::Algorithm(algorithm.name().into()))?;
        Ok(TsigKey { signer, algorithm })
    }

    /// The key of `name` read from a file: either the bare base64 secret (whitespace
    /// trimmed; hmac-sha256), or a BIND key file as `tsig-keygen` writes it
    /// (`key "name" { algorithm hmac-sha256; secret "..."; };`), whose clause named `name`
    /// gives the algorithm and the secret.
    pub fn from_file(name: &str, path: &Path) -> Result<Self, TsigError> {
        let text = std::fs::read_to_string(path).map_err(|source| TsigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !text.contains('{') {
            return Self::new(name, text.trim());
        }
        let file_error = |reason: String| TsigError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let wanted = key_name(name)?;
        let clauses = bind_key_clauses(&text).map_err(file_error)?;
        let mut names = Vec::new();
        for clause in clauses {
            if key_name(&clause.name).ok().as_ref() != Some(&wanted) {
                names.push(clause.name);
                continue;
            }
            let algorithm = match clause.algorithm {
                Some(a) => a
                    .parse()
                    .map_err(|e: TsigError| file_error(e.to_string()))?,
                None => return Err(file_error(format!("key {name:?} has no algorithm"))),
            };
            let Some(secret) = clause.secret else {
                return Err(file_error(format!("key {name:?} has no secret")));
            };
            return Self::with_algorithm(name, &secret, algorithm);
        }
        Err(file_error(if names.is_empty() {
            "no `key \"NAME\" { ... };` clause".to_string()
        } else {
            format!("no key named {name:?} (it has {})", names.join(", "))
        }))
    }

    /// The key's name (absolute).
    pub fn name(&self) -> &Name {
        self.signer.signer_name()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The bytes the TSIG record of a signed response adds to a message at most (with a
    /// BADTIME's Other Data): what a sender packing records into messages of at most
    /// 65535 bytes leaves free.
    pub fn max_record_len(&self) -> usize {
        let mac_len = match self.algorithm {
            Algorithm::HmacSha256 => 32,
            Algorithm::HmacSha384 => 48,
            Algorithm::HmacSha512 => 64,
        };
        let widest = TSIG::new(
            self.algorithm.hickory(),
            0,
            FUDGE,
            vec![0; mac_len],
            0,
            Some(TsigRcode::BadTime),
            vec![0; 6],
        );
        make_tsig_record(self.name().clone(), widest)
            .to_bytes()
            .map_or(MAX_MESSAGE, |bytes| bytes.len())
    }
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", self.name())
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn key_name(name: &str) -> Result<Name, TsigError> {
    let error = |reason: &str| TsigError::KeyName {
        name: name.into(),
        reason: reason.into(),
    };
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed == "." {
        return Err(error("empty"));
    }
    let mut parsed = Name::from_ascii(trimmed).map_err(|e| error(&e.to_string()))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// One `key "name" { ... };` clause of a BIND configuration file.
struct KeyClause {
    name: String,
    algorithm: Option<String>,
    secret: Option<String>,
}

/// The `key` clauses of a BIND key file (`tsig-keygen`, `ddns-confgen`); comments
/// (`#`, `//`, `/* */`) skipped. Other statements are an error: this is not a full
/// named.conf parser.
fn bind_key_clauses(text: &str) -> Result<Vec<KeyClause>, String> {
    #[derive(PartialEq)]
    enum Token<'a> {
        Word(&'a str),
        Quoted(&'a str),
        Punct(char),
    }
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
        } else if c == '#' || rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |i| &rest[i..]);
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").ok_or("unterminated /* comment")?;
            rest = &rest[end + 2..];
        } else if c == '"' {
            let end = rest[1..].find('"').ok_or("unterminated string")?;
            tokens.push(Token::Quoted(&rest[1..1 + end]));
            rest = &rest[end + 2..];
        } else if matches!(c, '{' | '}' | ';') {
            tokens.push(Token::Punct(c));
            rest = &rest[1..];
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, '{' | '}' | ';' | '"'))
                .unwrap_or(rest.len());
            tokens.push(Token::Word(&rest[..end]));
            rest = &rest[end..];
        }
    }
    let text_of = |t: Option<&Token<'_>>| match t {
        Some(Token::Word(s) | Token::Quoted(s)) => Some(s.to_string()),
        _ => None,
    };
    let mut clauses = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] != Token::Word("key") {
            return Err("expected `key \"NAME\" { ... };`".into());
        }
        let name = text_of(tokens.get(i + 1)).ok_or("a key clause without a name")?;
        if tokens.get(i + 2) != Some(&Token::Punct('{')) {
            return Err(format!("key {name:?}: expected `{{`"));
        }
        i += 3;
        let mut clause = KeyClause {
            name,
            algorithm: None,
            secret: None,
        };
        loop {
            match tokens.get(i) {
                Some(Token::Punct('}')) => break,
                Some(Token::Word(statement)) => {
                    let value = text_of(tokens.get(i + 1));
                    if tokens.get(i + 2) != Some(&Token::Punct(';')) || value.is_none() {
                        return Err(format!(
                            "key {:?}: expected `{statement} VALUE;`",
                            clause.name
                        ));
                    }
                    match statement.to_ascii_lowercase().as_str() {
                        "algorithm" => clause.algorithm = value,
                        "secret" => clause.secret = value,
                        other => {
                            return Err(format!(
                                "key {:?}: unknown statement {other:?}",
                                clause.name
                            ))
                        }
                    }
                    i += 3;
                }
                _ => return Err(format!("key {:?}: expected `}};`", clause.name)),
            }
        }
        if tokens.get(i + 1) != Some(&Token::Punct(';')) {
            return Err(format!("key {:?}: expected `;` after `}}`", clause.name));
        }
        i += 2;
        clauses.push(clause);
    }
    Ok(clauses)
}

/// What a request carried, as [`verify_request`] found it.
#[derive(Debug)]
pub enum RequestAuth {
    /// No TSIG record: whether that is allowed is the caller's decision.
    Unsigned,
    /// Signed with a known key, MAC and time good: sign the response with this.
    Signed(ResponseSigner),
    /// Signed but wrong (BADKEY, BADSIG, BADTIME): the NOTAUTH response with its TSIG
    /// record to send back (RFC 8945 §5.2), unsigned but for BADTIME.
    Rejected(Vec<u8>),
    /// Not a DNS message, or a TSIG record that is not the last one of the message (RFC
    /// 8945 §5.2: FORMERR): answer as any request that does not parse.
    Malformed,
}

/// Signs the messages of one response to a verified request: the first message's MAC
/// covers the request's MAC, each later one the previous message's (RFC 8945 §5.3.1).
/// Every message is signed.
pub struct ResponseSigner {
    key: TsigKey,
    /// The request's MAC, then that of the last message signed.
    previous_mac: Vec<u8>,
    first: bool,
}

impl ResponseSigner {
    /// The key the request was signed with.
    pub fn key(&self) -> &TsigKey {
        &self.key
    }

    /// [`ResponseSigner::sign_at`] the system clock's time.
    pub fn sign(&mut self, response: &[u8]) -> Result<Vec<u8>, TsigError> {
        self.sign_at(response, unix_now())
    }

    /// Signs the next message of the response (wire bytes without a TSIG record) at
    /// `now` (unix seconds): the message with its TSIG record appended. The message must
    /// leave [`TsigKey::max_record_len`] bytes free below 65535. On error the chain is
    /// unchanged.
    pub fn sign_at(&mut self, response: &[u8], now: u64) -> Result<Vec<u8>, TsigError> {
        if response.len() + self.key.max_record_len() > MAX_MESSAGE {
            return Err(TsigError::TooLarge);
        }
        let (header, body) = split_header(response)?;
        let unsigned = with_header(&header, body)?;
        let stub = TSIG::new(
            self.key.algorithm.hickory(),
            now,
            FUDGE,
            Vec::new(),
            header.metadata.id,
            None,
            Vec::new(),
        );
        let tbs = if self.first {
            self.key
                .signer
                .encode_response_tbs(&self.previous_mac, &unsigned, &stub)?
        } else {
            subsequent_tbs(&self.previous_mac, &unsigned, &stub)?
        };
        let mac = mac(&self.key, &tbs)?;
        let record = make_tsig_record(self.key.name().clone(), stub.set_mac(mac.clone()));
        let signed = append_record(header, body, &record)?;
        self.previous_mac = mac;
        self.first = false;
        Ok(signed)
    }
}

impl fmt::Debug for ResponseSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseSigner")
            .field("key", &self.key)
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

/// What [`sign_request`] keeps to verify the response: the request's ID and MAC.
#[derive(Debug, Clone)]
pub struct RequestMac {
    id: u16,
    mac: Vec<u8>,
}

impl RequestMac {
    /// The ID of the signed request.
    pub fn id(&self) -> u16 {
        self.id
    }
}

/// The system clock as unix seconds (0 before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies `request` (wire bytes) against `key` at `now` (unix seconds).
pub fn verify_request(key: &TsigKey, request: &[u8], now: u64) -> RequestAuth {
    verify_request_keys(std::slice::from_ref(key), request, now)
}

/// Verifies `request` against the key of `keys` it names (name compared
/// case-insensitively, and algorithm); a key not among them is BADKEY.
pub fn verify_request_keys(keys: &[TsigKey], request: &[u8], now: u64) -> RequestAuth {
    if request.len() > MAX_MESSAGE {
        return RequestAuth::Malformed;
    }
    // hickory's decoder rejects a TSIG record anywhere but last (RFC 8945 §5.2).
    let Ok(message) = Message::from_vec(request) else {
        return RequestAuth::Malformed;
    };
    let Some(record) = message.signature() else {
        return RequestAuth::Unsigned;
    };
    let tsig = &record.data;
    let key = Algorithm::of_record(&tsig.algorithm).and_then(|a| {
        keys.iter()
            .find(|k| k.algorithm == a && *k.name() == record.name)
    });
    let Some(key) = key else {
        return reject_unsigned(&message, record, TsigRcode::BadKey, now);
    };
    let Ok((tbv, _)) = signed_bitmessage_to_buf(request, None, true) else {
        return RequestAuth::Malformed;
    };
    // A MAC of another length (truncated) fails here too: truncation is not accepted.
    if key.signer.verify(&tbv, &tsig.mac).is_err() {
        return reject_unsigned(&message, record, TsigRcode::BadSig, now);
    }
    // RFC 8945 §5.2.3: the request's own interval. (No cache of the last time signed per
    // key: a replay within the fudge is the caller's to refuse, if it matters.)
    if now.abs_diff(tsig.time) > u64::from(tsig.fudge) {
        return reject_bad_time(key, &message, tsig, now);
    }
    RequestAuth::Signed(ResponseSigner {
        key: key.clone(),
        previous_mac: tsig.mac.clone(),
        first: true,
    })
}

/// The NOTAUTH response to a request, its question echoed.
fn error_response(request: &Message) -> Message {
    let mut response = Message::error_msg(request.id, request.op_code, ResponseCode::NotAuth);
    response.metadata.recursion_desired = request.recursion_desired;
    response.metadata.checking_disabled = request.checking_disabled;
    response.add_queries(request.queries.iter().cloned());
    response
}

/// BADKEY, BADSIG: unsigned (RFC 8945 §5.3.2), with the request's key name and algorithm.
fn reject_unsigned(
    request: &Message,
    record: &Record<TSIG>,
    error: TsigRcode,
    now: u64,
) -> RequestAuth {
    let mut response = error_response(request);
    let tsig = TSIG::new(
        record.data.algorithm.clone(),
        now,
        FUDGE,
        Vec::new(),
        record.data.oid,
        Some(error),
        Vec::new(),
    );
    response.set_signature(Box::new(make_tsig_record(record.name.clone(), tsig)));
    match response.to_vec() {
        Ok(bytes) => RequestAuth::Rejected(bytes),
        Err(_) => RequestAuth::Malformed,
    }
}

/// BADTIME: signed, covering the request's MAC, with the request's time and our clock in
/// Other Data (RFC 8945 §5.2.3, §5.3.2), as BIND does.
fn reject_bad_time(key: &TsigKey, request: &Message, tsig: &TSIG, now: u64) -> RequestAuth {
    let build = || -> Result<Vec<u8>, TsigError> {
        let unsigned = error_response(request).to_vec()?;
        let (header, body) = split_header(&unsigned)?;
        let mut other = Vec::with_capacity(6);
        let mut encoder = BinEncoder::new(&mut other);
        encoder.emit_u16((now >> 32) as u16)?;
        encoder.emit_u32(now as u32)?;
        let stub = TSIG::new(
            key.algorithm.hickory(),
            tsig.time,
            tsig.fudge,
            Vec::new(),
            tsig.oid,
            Some(TsigRcode::BadTime),
            other,
        );
        let tbs = key
            .signer
            .encode_response_tbs(&tsig.mac, &unsigned, &stub)?;
        let mac = mac(key, &tbs)?;
        let record = make_tsig_record(key.name().clone(), stub.set_mac(mac));
        append_record(header, body, &record)
    };
    match build() {
        Ok(bytes) => RequestAuth::Rejected(bytes),
        Err(_) => RequestAuth::Malformed,
    }
}

/// Signs `request` (wire bytes without a TSIG record) with `key` at `now`: the signed
/// request, and what [`verify_response`] needs of it.
pub fn sign_request(
    key: &TsigKey,
    request: &[u8],
    now: u64,
) -> Result<(Vec<u8>, RequestMac), TsigError> {
    if request.len() + key.max_record_len() > MAX_MESSAGE {
        return Err(TsigError::TooLarge);
    }
    let message = Message::from_vec(request).map_err(|e| TsigError::Malformed(e.to_string()))?;
    if message.signature().is_some() {
        return Err(TsigError::AlreadySigned);
    }
    let (header, body) = split_header(request)?;
    let unsigned = with_header(&header, body)?;
    let stub = TSIG::new(
        key.algorithm.hickory(),
        now,
        FUDGE,
        Vec::new(),
        header.metadata.id,
        None,
        Vec::new(),
    );
    let tbs = message_tbs(&Encoded(&unsigned), &stub, key.name())?;
    let mac = mac(key, &tbs)?;
    let record = make_tsig_record(key.name().clone(), stub.set_mac(mac.clone()));
    let signed = append_record(header, body, &record)?;
    Ok((
        signed,
        RequestMac {
            id: header.metadata.id,
            mac,
        },
    ))
}

/// Verifies the response to a request signed by [`sign_request`]: the same ID, signed
/// with `key`, its MAC covering the request's, its time within its fudge of `now`. A
/// server's TSIG error (BADKEY, BADSIG, BADTIME) is an error.
pub fn verify_response(
    key: &TsigKey,
    request: &RequestMac,
    response: &[u8],
    now: u64,
) -> Result<(), TsigError> {
    if response.len() > MAX_MESSAGE {
        return Err(TsigError::Malformed("longer than 65535 bytes".into()));
    }
    let message = Message::from_vec(response).map_err(|e| TsigError::Malformed(e.to_string()))?;
    if message.id != request.id {
        return Err(TsigError::IdMismatch {
            expected: request.id,
            got: message.id,
        });
    }
    let Some(record) = message.signature() else {
        return Err(TsigError::Unsigned);
    };
    let tsig = &record.data;
    // BADKEY and BADSIG come unsigned: nothing to verify, the request failed.
    if let Some(error @ (TsigRcode::BadKey | TsigRcode::BadSig)) = tsig.error {
        return Err(TsigError::Rejected {
            error: error.into(),
        });
    }
    if Algorithm::of_record(&tsig.algorithm) != Some(key.algorithm) || record.name != *key.name() {
        return Err(TsigError::WrongKey {
            name: record.name.clone(),
            algorithm: tsig.algorithm.to_string(),
        });
    }
    let (tbv, _) = signed_bitmessage_to_buf(response, Some(&request.mac), true)?;
    key.signer
        .verify(&tbv, &tsig.mac)
        .map_err(|_| TsigError::BadSig)?;
    match tsig.error {
        None => {}
        Some(TsigRcode::BadTime) => {
            let mut decoder = BinDecoder::new(&tsig.other);
            let server_time = match (decoder.read_u16(), decoder.read_u32()) {
                (Ok(high), Ok(low)) if tsig.other.len() == 6 => {
                    Some(u64::from(high.unverified()) << 32 | u64::from(low.unverified()))
                }
                _ => None,
            };
            return Err(TsigError::ServerBadTime {
                request_time: tsig.time,
                server_time,
            });
        }
        Some(error) => {
            return Err(TsigError::Rejected {
                error: error.into(),
            })
        }
    }
    if now.abs_diff(tsig.time) > u64::from(tsig.fudge) {
        return Err(TsigError::BadTime {
            signed: tsig.time,
            fudge: tsig.fudge,
            now,
        });
    }
    Ok(())
}

/// Already-encoded message bytes, for hickory's `message_tbs`.
struct Encoded<'a>(&'a [u8]);

impl BinEncodable for Encoded<'_> {
    fn emit(&self, encoder: &mut BinEncoder<'_>) -> Result<(), ProtoError> {
        encoder.emit_vec(self.0)
    }
}

fn mac(key: &TsigKey, tbs: &[u8]) -> Result<Vec<u8>, TsigError> {
    key.signer
        .sign(tbs)
        .map_err(|e| TsigError::Proto(ProtoError::from(e.to_string())))
}

/// A message's header and the bytes after it.
fn split_header(message: &[u8]) -> Result<(Header, &[u8]), TsigError> {
    if message.len() > MAX_MESSAGE {
        return Err(TsigError::TooLarge);
    }
    let mut decoder = BinDecoder::new(message);
    let header = Header::read(&mut decoder).map_err(|e| TsigError::Malformed(e.to_string()))?;
    let body = &message[message.len() - decoder.len()..];
    Ok((header, body))
}

/// The header as hickory encodes it, then `body`: the bytes that are signed, the same as
/// those sent but for the additional count (a header bit hickory does not know, as the
/// reserved Z, would otherwise differ between the MAC and the message).
fn with_header(header: &Header, body: &[u8]) -> Result<Vec<u8>, TsigError> {
    let mut bytes = Vec::with_capacity(12 + body.len());
    let mut encoder = BinEncoder::new(&mut bytes);
    header.emit(&mut encoder)?;
    encoder.emit_vec(body)?;
    Ok(bytes)
}

/// The message with `record` appended as its last additional record.
fn append_record(
    mut header: Header,
    body: &[u8],
    record: &Record<TSIG>,
) -> Result<Vec<u8>, TsigError> {
    header.counts.additionals = header
        .counts
        .additionals
        .checked_add(1)
        .ok_or(TsigError::TooLarge)?;
    let mut bytes = Vec::with_capacity(12 + body.len() + 128);
    let mut encoder = BinEncoder::new(&mut bytes);
    header.emit(&mut encoder)?;
    encoder.emit_vec(body)?;
    record.emit(&mut encoder)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(TsigError::TooLarge);
    }
    Ok(bytes)
}

/// The digest input of the second and later messages of a response (RFC 8945 §5.3.1):
/// the previous MAC with its length, the message, the TSIG timers (time signed, fudge).
/// hickory verifies these (`signed_bitmessage_to_buf` with `first_message` false) but has
/// no function to sign them.
fn subsequent_tbs(previous_mac: &[u8], message: &[u8], stub: &TSIG) -> Result<Vec<u8>, TsigError> {
    let mut tbs = Vec::with_capacity(2 + previous_mac.len() + message.len() + 8);
    let mut encoder = BinEncoder::new(&mut tbs);
    let mac_len = u16::try_from(previous_mac.len()).map_err(|_| TsigError::TooLarge)?;
    encoder.emit_u16(mac_len)?;
    encoder.emit_vec(previous_mac)?;
    encoder.emit_vec(message)?;
    encoder.emit_u16((stub.time >> 32) as u16)?;
    encoder.emit_u32(stub.time as u32)?;
    encoder.emit_u16(stub.fudge)?;
    Ok(tbs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, RecordType};
    use proptest::prelude::*;

    const SECRET: &str = "ADOGQ1nZ2qmYElHwbp5lGKKfKnywZC1JrMiwMEI80sk=";
    const OTHER_SECRET: &str = "c2VjcmV0LW9mLWFub3RoZXIta2V5LTAxMjM0NTY3ODk=";
    const NOW: u64 = 1_700_000_000;

    fn key() -> TsigKey {
        TsigKey::new("xfr-key", SECRET).expect("key")
    }

    fn query(id: u16, op_code: OpCode, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, op_code);
        m.add_query(Query::query(
            Name::from_ascii("example.consul.").expect("name"),
            qtype,
        ));
        m.to_vec().expect("encodes")
    }

    fn response(id: u16, addresses: &[u8]) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.authoritative = true;
        let name = Name::from_ascii("example.consul.").expect("name");
        m.add_query(Query::query(name.clone(), RecordType::A));
        for a in addresses {
            m.add_answer(Record::from_rdata(
                name.clone(),
                60,
                RData::A(A::new(10, 0, 0, *a)),
            ));
        }
        m.to_vec().expect("encodes")
    }

    fn signed(auth: RequestAuth) -> ResponseSigner {
        match auth {
            RequestAuth::Signed(s) => s,
            other => panic!("expected Signed, got {other:?}"),
        }
    }

    fn rejected(auth: RequestAuth) -> Message {
        match auth {
            RequestAuth::Rejected(bytes) => Message::from_vec(&bytes).expect("decodes"),
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    #[test]
    fn keys_parse_and_hide_their_secret() {
        let k = key();
        assert_eq!(k.name(), &Name::from_ascii("XFR-KEY.").expect("name"));
        assert!(k.name().is_fqdn());
        assert_eq!(k.algorithm(), Algorithm::HmacSha256);
        assert!(!format!("{k:?}").contains("ADOG"));
        // Whitespace inside the base64 (as a line-wrapped secret) is ignored.
        let wrapped =
            TsigKey::new("k", "ADOGQ1nZ2qmYElHwbp5l\n  GKKfKnywZC1JrMiwMEI80sk=").expect("key");
        assert_eq!(wrapped.signer.key(), k.signer.key());
        assert!(matches!(
            TsigKey::new("k", "not base64!"),
            Err(TsigError::Secret { .. })
        ));
        assert!(matches!(
            TsigKey::new("k", "  "),
            Err(TsigError::EmptySecret { .. })
        ));
        assert!(matches!(
            TsigKey::new("", SECRET),
            Err(TsigError::KeyName { .. })
        ));
        assert!(matches!(
            TsigKey::new(".", SECRET),
            Err(TsigError::KeyName { .. })
        ));
        assert!(matches!(
            TsigKey::new("a..b", SECRET),
            Err(TsigError::KeyName { .. })
        ));
        for (text, algorithm) in [
            ("hmac-sha256", Algorithm::HmacSha256),
            ("HMAC-SHA384.", Algorithm::HmacSha384),
            ("hmac-sha512", Algorithm::HmacSha512),
        ] {
            assert_eq!(text.parse::<Algorithm>().expect("known"), algorithm);
        }
        assert!("hmac-md5".parse::<Algorithm>().is_err());
    }

    #[test]
    fn max_record_len_is_what_a_signature_adds() {
        for algorithm in [Algorithm::HmacSha256, Algorithm::HmacSha512] {
            let k = TsigKey::with_algorithm("a.long.key.name", SECRET, algorithm).expect("key");
            let (signed, _) =
                sign_request(&k, &query(1, OpCode::Notify, RecordType::SOA), NOW).expect("signs");
            let added = signed.len() - query(1, OpCode::Notify, RecordType::SOA).len();
            // A signature without Other Data: 6 bytes short of the widest.
            assert_eq!(added + 6, k.max_record_len());
        }
    }

    #[test]
    fn key_files_bare_or_bind() {
        let dir = std::env::temp_dir().join(format!("consul-dns-tsig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bare = dir.join("bare");
        std::fs::write(&bare, format!("  {SECRET}\n")).expect("write");
        let k = TsigKey::from_file("xfr-key", &bare).expect("bare secret");
        assert_eq!(k.signer.key(), key().signer.key());

        let bind = dir.join("bind.key");
        std::fs::write(
            &bind,
            format!(
                "# made by tsig-keygen\nkey \"other\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{OTHER_SECRET}\";\n}};\n\
                 /* the one */ key \"Xfr-Key\" {{\n\talgorithm hmac-sha512;\n\tsecret \"{SECRET}\"; // here\n}};\n"
            ),
        )
        .expect("write");
        let k = TsigKey::from_file("xfr-key.", &bind).expect("bind key file");
        assert_eq!(k.algorithm(), Algorithm::HmacSha512);
        assert_eq!(k.signer.key(), key().signer.key());
        let err = TsigKey::from_file("missing", &bind).expect_err("no such key");
        assert!(err.to_string().contains("other, Xfr-Key"), "{err}");

        let broken = dir.join("broken.key");
        std::fs::write(
            &broken,
            "key \"k\" { algorithm hmac-md5; secret \"AAAA\"; };",
        )
        .expect("write");
        let err = TsigKey::from_file("k", &broken).expect_err("md5");
        assert!(err.to_string().contains("hmac-md5"), "{err}");
        std::fs::write(&broken, "key \"k\" { secret \"AAAA\" };").expect("write");
        assert!(matches!(
            TsigKey::from_file("k", &broken),
            Err(TsigError::KeyFile { .. })
        ));
        assert!(matches!(
            TsigKey::from_file("k", &dir.join("absent")),
            Err(TsigError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_signed_exchange_verifies_both_ways() {
        let k = key();
        let (request, mac) =
            sign_request(&k, &query(4711, OpCode::Notify, RecordType::SOA), NOW).expect("signs");
        assert_eq!(mac.id(), 4711);
        let parsed = Message::from_vec(&request).expect("decodes");
        assert!(parsed.signature().is_some());
        // The server's clock a little off, within the fudge.
        let mut signer = signed(verify_request(&k, &request, NOW + 200));
        assert_eq!(signer.key().name(), k.name());
        let reply = signer
            .sign_at(&response(4711, &[1]), NOW + 200)
            .expect("signs");
        verify_response(&k, &mac, &reply, NOW).expect("verifies");

        // Tampered with, unsigned, another ID, another key, too late.
        let mut tampered = reply.clone();
        let at = response(4711, &[1]).len() - 1; // the address's last byte
        tampered[at] ^= 1;
        assert!(matches!(
            verify_response(&k, &mac, &tampered, NOW),
            Err(TsigError::BadSig)
        ));
        assert!(matches!(
            verify_response(&k, &mac, &response(4711, &[1]), NOW),
            Err(TsigError::Unsigned)
        ));
        let other_id = signed(verify_request(&k, &request, NOW))
            .sign_at(&response(4712, &[1]), NOW)
            .expect("signs");
        assert!(matches!(
            verify_response(&k, &mac, &other_id, NOW),
            Err(TsigError::IdMismatch {
                expected: 4711,
                got: 4712
            })
        ));
        let other_key = TsigKey::new("other-key", SECRET).expect("key");
        assert!(matches!(
            verify_response(&other_key, &mac, &reply, NOW),
            Err(TsigError::WrongKey { .. })
        ));
        assert!(matches!(
            verify_response(&k, &mac, &reply, NOW + 200 + 301),
            Err(TsigError::BadTime { .. })
        ));
        // A response answering another request (its MAC covers another request MAC).
        let (_, mac2) = sign_request(&k, &query(4711, OpCode::Notify, RecordType::SOA), NOW + 1)
            .expect("signs");
        assert!(matches!(
            verify_response(&k, &mac2, &reply, NOW),
            Err(TsigError::BadSig)
        ));
    }

    #[test]
    fn a_multi_message_response_verifies_with_hickorys_verifier() {
        let k = key();
        // The request signed by hickory itself; hickory's TSigVerifier checks the chain.
        let mut request =
            Message::from_vec(&query(99, OpCode::Query, RecordType::AXFR)).expect("q");
        let (record, verifier) = k.signer.sign_message(&request, NOW).expect("hickory signs");
        let mut verifier = verifier.expect("a verifier");
        request.set_signature(record);
        let request = request.to_vec().expect("encodes");
        let mut signer = signed(verify_request(&k, &request, NOW));
        for (i, addresses) in [&[1u8, 2][..], &[3, 4, 5], &[6]].into_iter().enumerate() {
            let message = signer
                .sign_at(&response(99, addresses), NOW + i as u64)
                .expect("signs");
            verifier
                .verify(&message)
                .unwrap_or_else(|e| panic!("message {i} does not verify: {e}"));
        }
        // A message signed as the first (the full TSIG variables) does not verify as a
        // later one.
        let mut fresh = signed(verify_request(&k, &request, NOW));
        let first_again = fresh.sign_at(&response(99, &[7]), NOW + 3).expect("signs");
        assert!(verifier.verify(&first_again).is_err());
    }

    #[test]
    fn a_failed_sign_leaves_the_chain_as_it_was() {
        let k = key();
        let (request, mac) =
            sign_request(&k, &query(5, OpCode::Notify, RecordType::SOA), NOW).expect("signs");
        let mut signer = signed(verify_request(&k, &request, NOW));
        assert!(matches!(
            signer.sign_at(&[1, 2, 3], NOW),
            Err(TsigError::Malformed(_))
        ));
        assert!(matches!(
            signer.sign_at(&vec![0; 65535 - 50], NOW),
            Err(TsigError::TooLarge)
        ));
        let reply = signer.sign_at(&response(5, &[1]), NOW).expect("signs");
        verify_response(&k, &mac, &reply, NOW).expect("the first message still");
    }

    #[test]
    fn key_names_compare_case_insensitively_algorithm_names_too() {
        let upper = TsigKey::new("XFR-KEY", SECRET).expect("key");
        let (request, _) =
            sign_request(&upper, &query(7, OpCode::Notify, RecordType::SOA), NOW).expect("signs");
        signed(verify_request(&key(), &request, NOW));
        // The algorithm name spelled in capitals on the wire: the same algorithm, and the
        // MAC covers it in lower case.
        let pos = request
            .windows(11)
            .position(|w| w == b"hmac-sha256")
            .expect("algorithm on the wire");
        let mut shouting = request.clone();
        shouting[pos..pos + 11].make_ascii_uppercase();
        signed(verify_request(&key(), &shouting, NOW));
    }

    #[test]
    fn bad_key_bad_sig_bad_time_are_answered_as_the_rfc_says() {
        let k = key();
        let plain = query(321, OpCode::Query, RecordType::AXFR);
        let (request, mac) = sign_request(&k, &plain, NOW).expect("signs");

        // Unknown key: BADKEY, unsigned, the request's key name and algorithm echoed.
        let other_name = TsigKey::new("other-key", SECRET).expect("key");
        let m = rejected(verify_request(&other_name, &request, NOW));
        assert_eq!(m.metadata.response_code, ResponseCode::NotAuth);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.id, 321);
        assert_eq!(m.queries, Message::from_vec(&plain).expect("q").queries);
        let tsig = m.signature().expect("a TSIG record");
        assert_eq!(tsig.name, *k.name());
        assert_eq!(tsig.data.error, Some(TsigRcode::BadKey));
        assert!(tsig.data.mac.is_empty());
        assert_eq!(tsig.data.oid, 321);
        let RequestAuth::Rejected(bytes) = verify_request(&other_name, &request, NOW) else {
            unreachable!()
        };
        assert!(matches!(
            verify_response(&k, &mac, &bytes, NOW),
            Err(TsigError::Rejected { error: 17 })
        ));
        // Same name, other algorithm: BADKEY too.
        let sha512 = TsigKey::with_algorithm("xfr-key", SECRET, Algorithm::HmacSha512).expect("k");
        let m = rejected(verify_request(&sha512, &request, NOW));
        assert_eq!(
            m.signature().expect("tsig").data.error,
            Some(TsigRcode::BadKey)
        );
        // Among several keys, the one named is used.
        signed(verify_request_keys(
            &[other_name, sha512, k.clone()],
            &request,
            NOW,
        ));

        // Wrong secret: BADSIG, unsigned.
        let wrong = TsigKey::new("xfr-key", OTHER_SECRET).expect("key");
        let m = rejected(verify_request(&wrong, &request, NOW));
        let tsig = m.signature().expect("a TSIG record");
        assert_eq!(tsig.data.error, Some(TsigRcode::BadSig));
        assert!(tsig.data.mac.is_empty());
        let RequestAuth::Rejected(bytes) = verify_request(&wrong, &request, NOW) else {
            unreachable!()
        };
        let err = verify_response(&k, &mac, &bytes, NOW).expect_err("BADSIG");
        assert!(err.to_string().contains("BADSIG"), "{err}");

        // A modified request: BADSIG.
        let mut modified = request.clone();
        let name_at = 12 + 1; // the first byte of the question's first label
        modified[name_at] ^= 0x20; // case change: still the same name, not the same bytes
        let m = rejected(verify_request(&k, &modified, NOW));
        assert_eq!(
            m.signature().expect("tsig").data.error,
            Some(TsigRcode::BadSig)
        );

        // Out of the fudge, both ways: BADTIME, signed, our clock in Other Data, the
        // request's time signed.
        for now in [NOW + 301, NOW - 301] {
            let RequestAuth::Rejected(bytes) = verify_request(&k, &request, now) else {
                panic!("expected BADTIME")
            };
            let m = Message::from_vec(&bytes).expect("decodes");
            assert_eq!(m.metadata.response_code, ResponseCode::NotAuth);
            let tsig = m.signature().expect("a TSIG record");
            assert_eq!(tsig.data.error, Some(TsigRcode::BadTime));
            assert_eq!(tsig.data.time, NOW);
            assert_eq!(tsig.data.mac.len(), 32);
            match verify_response(&k, &mac, &bytes, NOW) {
                Err(TsigError::ServerBadTime {
                    request_time,
                    server_time,
                }) => {
                    assert_eq!(request_time, NOW);
                    assert_eq!(server_time, Some(now));
                }
                other => panic!("expected ServerBadTime, got {other:?}"),
            }
        }
        // At the edge of the fudge: fine.
        signed(verify_request(&k, &request, NOW + 300));
        signed(verify_request(&k, &request, NOW - 300));
    }

    #[test]
    fn unsigned_and_malformed_requests() {
        let k = key();
        assert!(matches!(
            verify_request(&k, &query(1, OpCode::Query, RecordType::AXFR), NOW),
            RequestAuth::Unsigned
        ));
        for junk in [&[][..], &[0u8; 5], &[0xff; 40]] {
            assert!(matches!(
                verify_request(&k, junk, NOW),
                RequestAuth::Malformed
            ));
        }
        // A TSIG record followed by another additional record: FORMERR territory.
        let (request, _) =
            sign_request(&k, &query(1, OpCode::Query, RecordType::AXFR), NOW).expect("signs");
        let mut after = request.clone();
        // Append an A record after the TSIG record and count it.
        let a = Record::from_rdata(
            Name::from_ascii("x.").expect("name"),
            0,
            RData::A(A::new(1, 2, 3, 4)),
        )
        .to_bytes()
        .expect("encodes");
        after.extend_from_slice(&a);
        after[11] += 1;
        assert!(matches!(
            verify_request(&k, &after, NOW),
            RequestAuth::Malformed
        ));
        // Signing a signed request, or a message too long.
        assert!(matches!(
            sign_request(&k, &request, NOW),
            Err(TsigError::AlreadySigned)
        ));
        assert!(matches!(
            sign_request(&k, &vec![0; 70_000], NOW),
            Err(TsigError::TooLarge)
        ));
        assert!(matches!(
            verify_request(&k, &vec![0; 70_000], NOW),
            RequestAuth::Malformed
        ));
    }

    fn signed_request() -> Vec<u8> {
        sign_request(&key(), &query(77, OpCode::Query, RecordType::AXFR), NOW)
            .expect("signs")
            .0
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// No bytes make verify_request panic; arbitrary bytes are never Signed.
        #[test]
        fn verify_request_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let auth = verify_request(&key(), &bytes, NOW);
            prop_assert!(!matches!(auth, RequestAuth::Signed(_)));
            let _ = verify_response(&key(), &RequestMac { id: 0, mac: vec![0; 32] }, &bytes, NOW);
            let mut signer = ResponseSigner { key: key(), previous_mac: vec![1; 32], first: true };
            let _ = signer.sign_at(&bytes, NOW);
            let _ = sign_request(&key(), &bytes, NOW);
        }

        /// A signed request with bytes changed, cut or added: no panic, and whatever
        /// answer comes back parses.
        #[test]
        fn verify_request_survives_mutations(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in proptest::option::of(any::<usize>()),
            extra in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut bytes = signed_request();
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            bytes.extend_from_slice(&extra);
            match verify_request(&key(), &bytes, NOW) {
                RequestAuth::Rejected(reply) => {
                    prop_assert!(Message::from_vec(&reply).is_ok());
                }
                RequestAuth::Signed(mut signer) => {
                    prop_assert!(signer.sign_at(&response(77, &[1]), NOW).is_ok());
                }
                RequestAuth::Unsigned | RequestAuth::Malformed => {}
            }
        }
    }
}
