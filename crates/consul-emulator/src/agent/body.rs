//! Bodies of the agent's write endpoints: service definitions (`/v1/agent/service/register`),
//! check definitions (`Check`, `Checks`, `/v1/agent/check/register`) and check updates,
//! decoded and validated in Consul's order with Consul's messages (`agent_endpoint.go`,
//! `structs/check_type.go`, `structs.ValidateWeights`, `structs.ValidateServiceMetadata`).
//!
//! Durations are Go duration strings (`"15s"`) or numbers of nanoseconds, as Consul's
//! `CheckType.UnmarshalJSON` accepts. Unknown fields are ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::duration;
use crate::register::{parse_service, Obj, ServiceSpec};
use crate::EmulatorError;

/// Consul's `CheckBufSize` / default `OutputMaxSize`.
const OUTPUT_MAX: usize = 4096;

/// A check definition (Consul's `CheckType`, plus `ServiceID` for `/v1/agent/check/register`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CheckDef {
    pub id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub service_id: String,
    pub ttl: Option<Duration>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub deregister_after: Option<Duration>,
    pub http: String,
    pub method: String,
    pub header: BTreeMap<String, Vec<String>>,
    pub body: String,
    pub tls_skip_verify: bool,
    pub tcp: String,
    /// Accepted and echoed, never run by the emulator.
    pub grpc: String,
    pub udp: String,
    pub h2ping: String,
    pub os_service: String,
    pub alias: bool,
    /// `Args`/`ScriptArgs` given: a script (or Docker) check.
    pub script: bool,
    pub docker: bool,
    pub output_max_size: i64,
    pub failures_before_warning: i64,
    pub failures_before_critical: i64,
}

/// What a check probes, for the check runner.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Probe {
    Http {
        url: String,
        method: String,
        header: BTreeMap<String, Vec<String>>,
        body: String,
    },
    Tcp(String),
}

fn positive(d: Option<Duration>) -> bool {
    d.is_some_and(|d| !d.is_zero())
}

impl CheckDef {
    /// Consul's `CheckType.Validate`, same messages in the same order.
    pub fn validate(&self) -> Result<(), String> {
        let interval_check = self.script
            || !self.http.is_empty()
            || !self.tcp.is_empty()
            || !self.udp.is_empty()
            || !self.grpc.is_empty()
            || !self.h2ping.is_empty()
            || !self.os_service.is_empty();
        let (interval, ttl) = (positive(self.interval), positive(self.ttl));
        let error = if interval && ttl {
            "Interval and TTL cannot both be specified"
        } else if interval_check && !interval {
            "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
        } else if interval_check && self.alias {
            "Interval cannot be set for Alias checks"
        } else if self.alias && ttl {
            "TTL must be not be set for Alias checks"
        } else if !interval_check && !self.alias && !ttl {
            "TTL must be > 0 for TTL checks"
        } else if self.output_max_size < 0 {
            "MaxOutputMaxSize must be positive"
        } else if self.failures_before_warning > self.failures_before_critical {
            "FailuresBeforeWarning can't be higher than FailuresBeforeCritical"
        } else {
            return Ok(());
        };
        Err(error.to_string())
    }

    /// Consul's `CheckType.Type()`.
    pub fn check_type(&self) -> &'static str {
        let interval = positive(self.interval);
        if !self.grpc.is_empty() && interval {
            "grpc"
        } else if !self.http.is_empty() && interval {
            "http"
        } else if positive(self.ttl) {
            "ttl"
        } else if !self.tcp.is_empty() && interval {
            "tcp"
        } else if !self.udp.is_empty() && interval {
            "udp"
        } else if self.alias {
            "alias"
        } else if self.script && self.docker && interval {
            "docker"
        } else if self.script {
            "script"
        } else if !self.h2ping.is_empty() && interval {
            "h2ping"
        } else if !self.os_service.is_empty() && interval {
            "os_service"
        } else {
            ""
        }
    }

    /// The probe the emulator runs every `Interval` (HTTP and TCP checks only).
    pub fn probe(&self) -> Option<Probe> {
        match self.check_type() {
            "http" => Some(Probe::Http {
                url: self.http.clone(),
                method: self.method.clone(),
                header: self.header.clone(),
                body: self.body.clone(),
            }),
            "tcp" => Some(Probe::Tcp(self.tcp.clone())),
            _ => None,
        }
    }

    /// `HealthCheckDefinition` as synced to the catalog (Go's `omitempty` fields).
    pub fn definition_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        let mut text = |key: &str, value: &str| {
            if !value.is_empty() {
                map.insert(key.to_string(), Value::from(value));
            }
        };
        text("HTTP", &self.http);
        text("Method", &self.method);
        text("Body", &self.body);
        text("TCP", &self.tcp);
        text("UDP", &self.udp);
        text("GRPC", &self.grpc);
        text("H2PING", &self.h2ping);
        text("OSService", &self.os_service);
        for (key, d) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("DeregisterCriticalServiceAfter", self.deregister_after),
        ] {
            if let Some(d) = d.filter(|d| !d.is_zero()) {
                map.insert(key.to_string(), Value::from(duration::format(d)));
            }
        }
        if !self.header.is_empty() {
            map.insert("Header".into(), serde_json::json!(self.header));
        }
        if self.tls_skip_verify {
            map.insert("TLSSkipVerify".into(), Value::Bool(true));
        }
        Value::Object(map)
    }
}

/// Is `status` one Consul accepts (`structs.ValidStatus`)?
pub(crate) fn valid_status(status: &str) -> bool {
    matches!(status, "passing" | "warning" | "critical")
}

/// Output longer than 4 KiB is cut as Consul's `CheckTTL.SetStatus` cuts it.
pub(crate) fn truncate_output(output: String) -> String {
    if output.len() <= OUTPUT_MAX {
        return output;
    }
    let mut cut = OUTPUT_MAX;
    while !output.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{} ... (captured {OUTPUT_MAX} of {} bytes)",
        &output[..cut],
        output.len()
    )
}

/// A `PUT /v1/agent/service/register` body.
pub(crate) struct ServiceRegistration {
    pub service: ServiceSpec,
    pub checks: Vec<CheckDef>,
}

pub(crate) fn parse_service_registration(
    body: &Value,
) -> Result<ServiceRegistration, EmulatorError> {
    let o = Obj::root(body)?;
    let mut checks = Vec::new();
    if let Some(c) = o.object("Check")? {
        // Consul drops an empty `Check` (the Go client sends `"Check": null` or `{}`).
        let def = parse_check(&c, &["CheckID", "ID"])?;
        if def != CheckDef::default() {
            checks.push(def);
        }
    }
    for c in o.objects("Checks")? {
        checks.push(parse_check(&c, &["CheckID", "ID"])?);
    }
    let name = o.string("Name")?;
    if name.is_empty() {
        return Err(EmulatorError::BadRequest("Missing service name".into()));
    }
    // The catalog's `Service` object has the same fields, the name aside.
    let mut fields = o.raw().clone();
    fields.retain(|k, _| {
        !["Name", "Service", "Check", "Checks"]
            .iter()
            .any(|f| k.eq_ignore_ascii_case(f))
    });
    fields.insert("Service".into(), Value::String(name));
    let fields = Value::Object(fields);
    let service = parse_service(&Obj::root(&fields)?).map_err(|e| match e {
        EmulatorError::Invalid(msg) => {
            EmulatorError::BadRequest(format!("Validation failed: {msg}"))
        }
        other => other,
    })?;
    if o.get("Weights").is_some() {
        validate_weights(service.weights)
            .map_err(|e| EmulatorError::BadRequest(format!("Invalid Weights: {e}")))?;
    }
    validate_meta(&service.meta)
        .map_err(|e| EmulatorError::BadRequest(format!("Invalid Service Meta: {e}")))?;
    for check in &checks {
        check
            .validate()
            .map_err(|e| EmulatorError::BadRequest(format!("Invalid check: {e}")))?;
    }
    if checks
        .iter()
        .any(|c| !c.status.is_empty() && !valid_status(&c.status))
    {
        return Err(EmulatorError::BadRequest(
            "Status for checks must 'passing', 'warning', 'critical'".into(),
        ));
    }
    Ok(ServiceRegistration { service, checks })
}

/// A `PUT /v1/agent/check/register` body (`ID`, else `CheckID`, else the name).
pub(crate) fn parse_check_registration(body: &Value) -> Result<CheckDef, EmulatorError> {
    let o = Obj::root(body)?;
    let mut def = parse_check(&o, &["ID", "CheckID"])?;
    if def.name.is_empty() {
        return Err(EmulatorError::BadRequest("Missing check name".into()));
    }
    if !def.status.is_empty() && !valid_status(&def.status) {
        return Err(EmulatorError::BadRequest("Bad check status".into()));
    }
    def.validate()
        .map_err(|e| EmulatorError::BadRequest(format!("Invalid check: {e}")))?;
    if def.id.is_empty() {
        def.id = def.name.clone();
    }
    Ok(def)
}

/// A `PUT /v1/agent/check/update/<id>` body: (status, output).
pub(crate) fn parse_check_update(body: &Value) -> Result<(String, String), EmulatorError> {
    let o = Obj::root(body)?;
    let status = o.string("Status")?;
    if !valid_status(&status) {
        return Err(EmulatorError::BadRequest(format!(
            "Invalid check status: '{status}'"
        )));
    }
    // The handler cuts the output once, the TTL check a second time (as Consul does).
    Ok((status, truncate_output(o.string("Output")?)))
}

fn parse_check(o: &Obj<'_>, id_keys: &[&str]) -> Result<CheckDef, EmulatorError> {
    let mut id = String::new();
    for key in id_keys {
        if id.is_empty() {
            id = o.string(key)?;
        }
    }
    let mut header = BTreeMap::new();
    if let Some(h) = o.object("Header")? {
        for key in h.keys() {
            header.insert(key.clone(), h.strings(&key)?);
        }
    }
    let mut args = o.strings("Args")?;
    if args.is_empty() {
        args = o.strings("ScriptArgs")?;
    }
    let int = |key: &str| o.int(key).map(Option::unwrap_or_default);
    let mut service_id = o.string("ServiceID")?;
    if service_id.is_empty() {
        service_id = o.string("service_id")?;
    }
    let mut deregister_after = duration_field(o, "DeregisterCriticalServiceAfter")?;
    if deregister_after.is_none() {
        deregister_after = duration_field(o, "deregister_critical_service_after")?;
    }
    Ok(CheckDef {
        id,
        name: o.string("Name")?,
        status: o.string("Status")?,
        notes: o.string("Notes")?,
        service_id,
        ttl: duration_field(o, "TTL")?,
        interval: duration_field(o, "Interval")?,
        timeout: duration_field(o, "Timeout")?,
        deregister_after,
        http: o.string("HTTP")?,
        method: o.string("Method")?,
        header,
        body: o.string("Body")?,
        tls_skip_verify: o.boolean("TLSSkipVerify")?,
        tcp: o.string("TCP")?,
        grpc: o.string("GRPC")?,
        udp: o.string("UDP")?,
        h2ping: o.string("H2PING")?,
        os_service: o.string("OSService")?,
        alias: !o.string("AliasNode")?.is_empty() || !o.string("AliasService")?.is_empty(),
        script: !args.is_empty(),
        docker: !o.string("DockerContainerID")?.is_empty(),
        output_max_size: int("OutputMaxSize")?,
        failures_before_warning: int("FailuresBeforeWarning")?,
        failures_before_critical: int("FailuresBeforeCritical")?,
    })
}

/// A Go duration string, or a number of nanoseconds; `null`/absent is `None`.
fn duration_field(o: &Obj<'_>, key: &str) -> Result<Option<Duration>, EmulatorError> {
    match o.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => duration::parse(s)
            .map(Some)
            .map_err(|()| EmulatorError::Decode(format!("time: invalid duration {s:?}"))),
        Some(Value::Number(n)) => {
            // Negative durations are invalid for every field read here: zero says so.
            let nanos = n.as_f64().unwrap_or(0.0).max(0.0);
            Ok(Some(Duration::from_nanos(nanos as u64)))
        }
        Some(_) => Err(o.type_error(key, "a duration")),
    }
}

/// `structs.ValidateWeights`.
fn validate_weights((passing, warning): (i64, i64)) -> Result<(), &'static str> {
    if passing < 1 {
        Err("Passing must be greater than 0")
    } else if warning < 0 {
        Err("Warning must be greater or equal than 0")
    } else if passing > 65535 || warning > 65535 {
        Err("DNS Weight must be between 0 and 65535")
    } else {
        Ok(())
    }
}

/// `structs.ValidateServiceMetadata` for a typical service (pairs checked in key order).
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > 64 {
        return Err("Node metadata cannot contain more than 64 key/value pairs".into());
    }
    for (key, value) in meta {
        let problem = if key.is_empty() {
            "Key cannot be blank".to_string()
        } else if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            "Key contains invalid characters".to_string()
        } else if key.len() > 128 {
            "Key is too long (limit: 128 characters)".to_string()
        } else if key.starts_with("consul-") {
            "Key prefix 'consul-' is reserved for internal use".to_string()
        } else if value.len() > 512 {
            "Value is too long (limit: 512 characters)".to_string()
        } else {
            continue;
        };
        return Err(format!(
            "Couldn't load metadata pair ('{key}', '{value}'): {problem}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_is_cut_at_4k_on_a_char_boundary() {
        assert_eq!(truncate_output("short".into()), "short");
        let long = "é".repeat(3000); // 6000 bytes, 2 per char
        let cut = truncate_output(long);
        assert!(cut.ends_with(" ... (captured 4096 of 6000 bytes)"), "{cut}");
        assert_eq!(cut.len(), 4096 + " ... (captured 4096 of 6000 bytes)".len());
    }

    #[test]
    fn check_types_follow_consul() {
        let def = |v: Value| {
            let o = Obj::root(&v).map_err(|e| e.to_string())?;
            parse_check(&o, &["CheckID"]).map_err(|e| e.to_string())
        };
        let ttl = def(json!({"TTL": "15s"})).unwrap_or_default();
        assert_eq!((ttl.check_type(), ttl.validate()), ("ttl", Ok(())));
        let http = def(json!({"HTTP": "http://x/", "Interval": 1e9})).unwrap_or_default();
        assert_eq!(http.interval, Some(Duration::from_secs(1)));
        assert_eq!(http.check_type(), "http");
        assert!(http.probe().is_some());
        let no_interval = def(json!({"TCP": "127.0.0.1:1"})).unwrap_or_default();
        assert_eq!(
            no_interval.validate(),
            Err(
                "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
                    .into()
            )
        );
        assert_eq!(
            def(json!({"TTL": "soon"})),
            Err("Request decode failed: time: invalid duration \"soon\"".into())
        );
    }
}
