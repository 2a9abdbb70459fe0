//! Validation and normalisation of individual values, shared by flags and the config file.
//! Every function returns a one-line reason on error; callers name the key.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

/// Normalises a Consul HTTP address the way Consul's CLI accepts it.
///
/// `host:port` without a scheme gets `http://`; the scheme must be `http` or `https`;
/// `unix://` sockets are rejected. The result has no trailing slash, e.g.
/// `http://127.0.0.1:8500` (a path prefix such as `https://proxy/consul` is kept).
pub fn normalize_consul_addr(input: &str) -> Result<String, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("must not be empty (e.g. http://127.0.0.1:8500)".to_string());
    }
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("unix://") {
        return Err(
            "unix sockets are not supported; use an http:// or https:// address".to_string(),
        );
    }
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| format!("not a valid URL ({e})"))?;
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "unsupported scheme \"{scheme}\" (use http:// or https://)"
        ));
    }
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h,
        _ => return Err("not a valid URL (missing host)".to_string()),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the address are not supported; use --token".to_string());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not contain a query string or fragment".to_string());
    }
    let mut out = format!("{scheme}://{host}");
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path().trim_end_matches('/'));
    Ok(out)
}

/// Normalises a DNS domain: lower-cased, fully qualified (`"Consul"` → `"consul."`).
///
/// Labels are 1–63 characters of ASCII letters, digits, `-` and `_`; the name (without
/// the final dot) is at most 253 characters. The root (`"."`) is not allowed.
pub fn normalize_domain(input: &str) -> Result<String, String> {
    let lower = input.trim().to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err("must be a non-empty DNS name such as \"consul.\"".to_string());
    }
    if name.len() > 253 {
        return Err(format!(
            "not a valid DNS name: {} characters long (at most 253)",
            name.len()
        ));
    }
    for label in name.split('.') {
        check_label(label).map_err(|e| format!("not a valid DNS name: {e}"))?;
    }
    Ok(format!("{name}."))
}

/// Normalises a datacenter name: lower-cased, a single DNS label.
pub fn normalize_datacenter(input: &str) -> Result<String, String> {
    let lower = input.trim().to_ascii_lowercase();
    if lower.contains('.') {
        return Err("must be a single label (no dots)".to_string());
    }
    check_label(&lower)?;
    Ok(lower)
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty label".to_string());
    }
    if label.len() > 63 {
        return Err(format!(
            "label \"{label}\" is {} characters long (at most 63)",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "label \"{label}\" contains {c:?} (allowed: letters, digits, '-', '_')"
        ));
    }
    Ok(())
}

/// Parses a listen address `IP:PORT` (`127.0.0.1:8600`, `[::1]:8600`; port 0 = any free port).
pub fn parse_listen_addr(input: &str) -> Result<SocketAddr, String> {
    let s = input.trim();
    if let Ok(addr) = SocketAddr::from_str(s) {
        return Ok(addr);
    }
    match IpAddr::from_str(s) {
        Ok(IpAddr::V4(ip)) => return Err(format!("missing port (e.g. {ip}:8600)")),
        Ok(IpAddr::V6(_)) => {
            return Err("IPv6 addresses need brackets and a port, e.g. [::1]:8600".to_string())
        }
        Err(_) => {}
    }
    if s.matches(':').count() > 1 && !s.starts_with('[') {
        return Err("IPv6 addresses need brackets, e.g. [::1]:8600".to_string());
    }
    Err(
        "expected IP:PORT, e.g. 127.0.0.1:8600 or [::1]:8600 (host names are not resolved)"
            .to_string(),
    )
}

/// clap value parser for `--listen` / `--dev-http`.
/// A network for `internal_cidrs`: `10.2.0.0/16`, `fd00::/8`; a bare address is a /32 or /128.
pub fn parse_cidr(input: &str) -> Result<ipnet::IpNet, String> {
    let s = input.trim();
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("{input:?} is not a network like 10.2.0.0/16"))
}

pub(crate) fn parse_listen_arg(input: &str) -> Result<SocketAddr, String> {
    parse_listen_addr(input)
}

/// Parses a recursor address like Consul's `recursorAddr`: port 53 is added when missing,
/// a bare IPv6 literal is bracketed, `1.2.3.4::53` is an error. Only IP literals are
/// accepted (Consul would resolve a host name once at start-up; we do not).
pub fn parse_recursor(input: &str) -> Result<SocketAddr, String> {
    let s = input.trim();
    let addr = if let Ok(addr) = SocketAddr::from_str(s) {
        addr
    } else if let Ok(ip) = IpAddr::from_str(s) {
        SocketAddr::new(ip, 53)
    } else if let Some(ip) = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| IpAddr::from_str(r).ok())
    {
        SocketAddr::new(ip, 53)
    } else {
        return Err(
            "expected an IP address with optional port, e.g. \"8.8.8.8\", \"8.8.8.8:53\", \
             \"2001:db8::1\" or \"[2001:db8::1]:53\" (host names are not resolved)"
                .to_string(),
        );
    };
    if addr.port() == 0 {
        return Err("port 0 is not a valid recursor port".to_string());
    }
    Ok(addr)
}

/// Parses a network for `allow_recursion`: `10.0.0.0/8`, `2001:db8::/32`, or a single
/// address (`192.0.2.1` = `/32`, `::1` = `/128`). Host bits are cleared (`10.1.2.3/8` is
/// `10.0.0.0/8`).
pub fn parse_network(input: &str) -> Result<IpNet, String> {
    let s = input.trim();
    if let Ok(net) = IpNet::from_str(s) {
        return Ok(net.trunc());
    }
    if let Ok(ip) = IpAddr::from_str(s) {
        return Ok(IpNet::from(ip));
    }
    Err(
        "expected a network in CIDR notation (\"10.0.0.0/8\", \"2001:db8::/32\") or an IP \
         address"
            .to_string(),
    )
}

/// clap value parser for `--recursor`.
pub(crate) fn parse_recursor_arg(input: &str) -> Result<SocketAddr, String> {
    parse_recursor(input)
}

/// clap value parser for `--zones` (an empty value, which clap's path parser rejects, means
/// no zones).
pub(crate) fn parse_zones_arg(input: &str) -> Result<std::path::PathBuf, String> {
    Ok(std::path::PathBuf::from(input))
}

/// clap value parser for the TLS file flags: an empty value (as an empty environment
/// variable gives) is accepted and means unset, as in Consul's client.
pub(crate) fn parse_path_arg(input: &str) -> Result<std::path::PathBuf, String> {
    Ok(std::path::PathBuf::from(input))
}

/// clap value parser for `--allow-recursion`.
pub(crate) fn parse_network_arg(input: &str) -> Result<IpNet, String> {
    parse_network(input)
}

/// Parses a boolean as Go's `strconv.ParseBool`, which Consul uses for
/// `CONSUL_HTTP_SSL_VERIFY`: `1`, `t`, `true` (any case) and `0`, `f`, `false`.
pub fn parse_bool(input: &str) -> Result<bool, String> {
    match input.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err("expected true or false (or 1 or 0)".to_string()),
    }
}

/// clap value parser for `--ssl-verify`.
pub(crate) fn parse_bool_arg(input: &str) -> Result<bool, String> {
    parse_bool(input)
}

/// Normalises the TLS server name: a DNS name (lower-cased, without a trailing dot) or an
/// IP address, as a certificate's subject alternative names hold them.
pub fn normalize_tls_server_name(input: &str) -> Result<String, String> {
    let s = input.trim().trim_end_matches('.').to_ascii_lowercase();
    if s.is_empty() {
        return Err("must be a DNS name or an IP address".to_string());
    }
    rustls::pki_types::ServerName::try_from(s.as_str())
        .map_err(|_| "not a valid DNS name or IP address".to_string())?;
    Ok(s)
}

/// Converts a TTL duration to whole seconds (fractions truncated, as Consul does).
pub fn ttl_seconds(d: Duration) -> Result<u32, String> {
    u32::try_from(d.as_secs())
        .map_err(|_| format!("TTL too large: {}s (at most {}s)", d.as_secs(), u32::MAX))
}

/// `text` with the credentials of every URL in it (`scheme://user:password@host`) replaced
/// by `***`, so an error that quotes an address never shows a password.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        let r = redact_userinfo;
        assert_eq!(
            r("\"http://user:pw@host:8500\""),
            "\"http://***@host:8500\""
        );
        assert_eq!(r("https://tok@h/v1?x=y"), "https://***@h/v1?x=y");
        assert_eq!(r("http://host:8500/a@b"), "http://host:8500/a@b");
        assert_eq!(
            r("ftp://a:b@x and http://c:d@y:1"),
            "ftp://***@x and http://***@y:1"
        );
        assert_eq!(r("no url here"), "no url here");
    }

    #[test]
    fn consul_addr_normalisation() {
        let cases = [
            ("http://127.0.0.1:8500", "http://127.0.0.1:8500"),
            ("http://127.0.0.1:8500/", "http://127.0.0.1:8500"),
            ("127.0.0.1:8500", "http://127.0.0.1:8500"),
            ("localhost:8500", "http://localhost:8500"),
            ("consul.service", "http://consul.service"),
            (
                "HTTPS://Consul.Example.com:8501",
                "https://consul.example.com:8501",
            ),
            (
                "https://proxy.example/consul/",
                "https://proxy.example/consul",
            ),
            ("[::1]:8500", "http://[::1]:8500"),
            ("http://[::1]:8500", "http://[::1]:8500"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_consul_addr(input).as_deref(), Ok(want), "{input}");
        }
        let bad = [
            ("", "empty"),
            (
                "unix:///var/run/consul.sock",
                "unix sockets are not supported",
            ),
            ("foo bar", "not a valid URL"),
            ("ftp://host:21", "unsupported scheme"),
            ("http://", "not a valid URL"),
            ("http://127.0.0.1:99999", "not a valid URL"),
            ("http://user:pw@host:8500", "credentials"),
            ("http://host:8500/?x=1", "query"),
        ];
        for (input, want) in bad {
            match normalize_consul_addr(input) {
                Ok(v) => panic!("{input:?} should fail, got {v}"),
                Err(e) => assert!(e.contains(want), "{input:?}: {e}"),
            }
        }
    }

    #[test]
    fn domain_normalisation() {
        assert_eq!(normalize_domain("consul").as_deref(), Ok("consul."));
        assert_eq!(normalize_domain("Consul.").as_deref(), Ok("consul."));
        assert_eq!(
            normalize_domain("My_Zone.Example-1.COM").as_deref(),
            Ok("my_zone.example-1.com.")
        );
        let long_label = "a".repeat(64);
        let long_name = vec!["a".repeat(63); 4].join("."); // 255 chars
        for bad in [
            "",
            ".",
            "a..b",
            ".consul",
            "foo bar",
            "cönsul",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?} should be rejected");
        }
        let ok_name = format!("{}.{}", vec!["a".repeat(63); 3].join("."), "a".repeat(61));
        assert_eq!(ok_name.len(), 253);
        assert!(normalize_domain(&ok_name).is_ok());
    }

    #[test]
    fn datacenter_normalisation() {
        assert_eq!(normalize_datacenter("DC1").as_deref(), Ok("dc1"));
        assert_eq!(
            normalize_datacenter("us-east_1").as_deref(),
            Ok("us-east_1")
        );
        assert!(normalize_datacenter("").is_err());
        assert!(normalize_datacenter("dc1.consul").is_err());
        assert!(normalize_datacenter("dc 1").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:8600"),
            Ok("127.0.0.1:8600".parse().unwrap_or_else(|_| unreachable!()))
        );
        assert_eq!(
            parse_listen_addr("[::1]:8600")
                .map(|a| a.to_string())
                .as_deref(),
            Ok("[::1]:8600")
        );
        assert_eq!(parse_listen_addr("0.0.0.0:0").map(|a| a.port()), Ok(0));
        assert!(parse_listen_addr("127.0.0.1")
            .unwrap_err()
            .contains("missing port"));
        assert!(parse_listen_addr("::1:8600")
            .unwrap_err()
            .contains("brackets"));
        assert!(parse_listen_addr("localhost:8600").is_err());
        assert!(parse_listen_addr("127.0.0.1:70000").is_err());
    }

    #[test]
    fn recursor_addresses_like_consul() {
        // TestDNS_RecursorAddr
        let cases = [
            ("8.8.8.8", "8.8.8.8:53"),
            ("8.8.8.8:5353", "8.8.8.8:5353"),
            ("2001:4860:4860::8888", "[2001:4860:4860::8888]:53"),
            ("[2001:4860:4860::8888]", "[2001:4860:4860::8888]:53"),
            ("[2001:4860:4860::8888]:53", "[2001:4860:4860::8888]:53"),
            ("[2001:db8::1]:5353", "[2001:db8::1]:5353"),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_recursor(input).map(|a| a.to_string()).as_deref(),
                Ok(want),
                "{input}"
            );
        }
        for bad in [
            "1.2.3.4::53",
            "",
            "dns.google",
            "8.8.8.8:0",
            "8.8.8.8:99999",
        ] {
            assert!(parse_recursor(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn networks() {
        let ok = [
            ("127.0.0.0/8", "127.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("192.0.2.1", "192.0.2.1/32"),
            ("::1", "::1/128"),
            ("::1/128", "::1/128"),
            (" 2001:db8::1/32 ", "2001:db8::/32"),
        ];
        for (input, want) in ok {
            assert_eq!(
                parse_network(input).map(|n| n.to_string()).as_deref(),
                Ok(want),
                "{input}"
            );
        }
        for bad in ["", "10.0.0.0/33", "localhost", "10.0.0.0/", "::1/129"] {
            assert!(parse_network(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn booleans_as_go_parses_them() {
        for t in ["1", "t", "T", "true", "TRUE", "True", " true "] {
            assert_eq!(parse_bool(t), Ok(true), "{t:?}");
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(f), Ok(false), "{f:?}");
        }
        for bad in ["", "yes", "no", "2", "on"] {
            assert!(parse_bool(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn tls_server_names() {
        assert_eq!(
            normalize_tls_server_name("Server.DC1.Consul.").as_deref(),
            Ok("server.dc1.consul")
        );
        assert_eq!(
            normalize_tls_server_name("10.0.0.1").as_deref(),
            Ok("10.0.0.1")
        );
        for bad in ["", ".", "a b", "host:8501", "-bad..name"] {
            assert!(
                normalize_tls_server_name(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn ttl_limits() {
        assert_eq!(ttl_seconds(Duration::from_millis(1999)), Ok(1));
        assert_eq!(
            ttl_seconds(Duration::from_secs(u64::from(u32::MAX))),
            Ok(u32::MAX)
        );
        assert!(ttl_seconds(Duration::from_secs(u64::from(u32::MAX) + 1)).is_err());
    }
}
