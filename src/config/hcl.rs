//! HCL as the Consul agent reads it: version 1 of HashiCorp's configuration language
//! (`github.com/hashicorp/hcl`, v1), read into plain values with their lines.
//!
//! Consul's own documentation writes HCL 1: a quoted key inside a block
//! (`service_ttl { "*" = "5s" }`), quoted block names (`"dns_config" { "allow_stale" = true }`),
//! several items on one line (`check { id = "x" interval = "10s" }`). HCL 2, which the
//! maintained Rust crate (hcl-rs) reads, rejects all three, and no maintained crate reads
//! HCL 1; this module reads HCL 1's data language, which is all a Consul file holds:
//! comments (`#`, `//`, `/* */`), keys (identifiers or quoted strings), `key = value`,
//! blocks `key "label" … { … }` (nested objects), strings with Go's escapes (a `${…}` kept as
//! written), heredocs (`<<EOF`, `<<-EOF`), numbers, booleans, lists and objects, items
//! separated by newlines, commas or nothing.
//!
//! A key given twice in one object: two objects are merged (as HCL 1 gathers repeated
//! blocks), otherwise the later value wins.

/// One value and the line it starts on (`None`: not known, as for JSON).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub line: Option<usize>,
    pub value: Value,
}

/// An HCL (or JSON) value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    List(Vec<Node>),
    Object(Object),
}

/// An object's items in the order written, each key once.
pub(super) type Object = Vec<(String, Node)>;

/// A syntax error: its line and what is wrong (one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Error {
    pub line: usize,
    pub message: String,
}

/// Lists and objects nested deeper than this are refused (a stack overflow otherwise).
const MAX_DEPTH: usize = 64;

/// Parses HCL 1 text: the items of the top-level object.
pub(super) fn parse(text: &str) -> Result<Object, Error> {
    Parser::new(text).document()
}

/// Whether `text` is HCL 1 with at least one block (`name { … }`), which no TOML file is:
/// a file given to `--config` that is an agent configuration.
pub(super) fn has_blocks(text: &str) -> bool {
    let mut parser = Parser::new(text);
    parser.document().is_ok() && parser.blocks > 0
}

/// Inserts `key`, merging two objects and otherwise keeping the later value.
pub(super) fn insert(object: &mut Object, key: String, node: Node) {
    let Some((_, slot)) = object.iter_mut().find(|(k, _)| *k == key) else {
        object.push((key, node));
        return;
    };
    match (&mut slot.value, node.value) {
        (Value::Object(old), Value::Object(new)) => {
            for (k, v) in new {
                insert(old, k, v);
            }
        }
        (_, value) => {
            *slot = Node {
                line: node.line,
                value,
            }
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    /// 1-based line of the next character.
    line: usize,
    depth: usize,
    /// Blocks (`key { … }`) read.
    blocks: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            pos: 0,
            line: 1,
            depth: 0,
            blocks: 0,
        }
    }

    fn error(&self, message: impl Into<String>) -> Error {
        self.error_at(self.line, message)
    }

    fn error_at(&self, line: usize, message: impl Into<String>) -> Error {
        Error {
            line,
            message: message.into(),
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Skips whitespace (newlines too) and comments.
    fn skip(&mut self) -> Result<(), Error> {
        loop {
            match (self.peek(), self.peek2()) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('#'), _) | (Some('/'), Some('/')) => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.line;
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            Some('*') if self.peek() == Some('/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                            None => return Err(self.error_at(start, "comment `/*` not closed")),
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    fn document(&mut self) -> Result<Object, Error> {
        if self.peek() == Some('\u{feff}') {
            self.bump();
        }
        self.items(None)
    }

    /// The items of an object: up to `}` when `open` (the line of its `{`), else to the end.
    fn items(&mut self, open: Option<usize>) -> Result<Object, Error> {
        let mut out = Object::new();
        loop {
            self.skip()?;
            match (self.peek(), open) {
                (None, None) => return Ok(out),
                (None, Some(line)) => {
                    return Err(self.error_at(line, "`{` not closed before the end of the file"))
                }
                (Some('}'), Some(_)) => {
                    self.bump();
                    return Ok(out);
                }
                (Some(_), _) => {
                    let (key, node) = self.item()?;
                    insert(&mut out, key, node);
                    self.skip()?;
                    if self.peek() == Some(',') {
                        self.bump();
                    }
                }
            }
        }
    }

    /// `key = value`, or a block `key "label" … { … }`.
    fn item(&mut self) -> Result<(String, Node), Error> {
        let line = self.line;
        let mut keys = vec![self.key()?];
        loop {
            self.skip()?;
            match self.peek() {
                Some('=') => {
                    self.bump();
                    if keys.len() > 1 {
                        return Err(self.error_at(
                            line,
                            format!(
                                "`=` after the labels of `{}`: a block with labels is written \
                                 `{} \"label\" {{ … }}`",
                                keys[0], keys[0]
                            ),
                        ));
                    }
                    self.skip()?;
                    let value = self.value()?;
                    return Ok((keys.remove(0), value));
                }
                Some('{') => {
                    let open = self.line;
                    self.bump();
                    self.enter()?;
                    let body = self.items(Some(open))?;
                    self.depth -= 1;
                    self.blocks += 1;
                    let mut node = Node {
                        line: Some(open),
                        value: Value::Object(body),
                    };
                    for label in keys.drain(1..).rev() {
                        node = Node {
                            line: Some(line),
                            value: Value::Object(vec![(label, node)]),
                        };
                    }
                    return Ok((keys.remove(0), node));
                }
                Some(c) if c == '"' || is_ident_start(c) => keys.push(self.key()?),
                found => {
                    let key = keys.last().map_or("", String::as_str);
                    return Err(self.error(format!(
                        "expected `=` or `{{` after the key `{key}`, found {}",
                        describe(found)
                    )));
                }
            }
        }
    }

    fn key(&mut self) -> Result<String, Error> {
        match self.peek() {
            Some('"') => self.string(),
            Some(c) if is_ident_start(c) => Ok(self.ident().to_string()),
            found => Err(self.error(format!("expected a key, found {}", describe(found)))),
        }
    }

    fn ident(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(is_ident_char) {
            self.bump();
        }
        &self.text[start..self.pos]
    }

    fn value(&mut self) -> Result<Node, Error> {
        let line = self.line;
        let value = match self.peek() {
            Some('"') => Value::String(self.string()?),
            Some('<') if self.rest().starts_with("<<") => Value::String(self.heredoc()?),
            Some('[') => self.list()?,
            Some('{') => {
                self.bump();
                self.enter()?;
                let object = self.items(Some(line))?;
                self.depth -= 1;
                Value::Object(object)
            }
            Some(c) if c == '-' || c == '+' || c.is_ascii_digit() => self.number()?,
            Some(c) if is_ident_start(c) => match self.ident() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                word => {
                    return Err(self.error_at(
                        line,
                        format!("`{word}` is not a value: a string is quoted (\"{word}\")"),
                    ))
                }
            },
            found => return Err(self.error(format!("expected a value, found {}", describe(found)))),
        };
        Ok(Node {
            line: Some(line),
            value,
        })
    }

    fn list(&mut self) -> Result<Value, Error> {
        let open = self.line;
        self.bump();
        self.enter()?;
        let mut items = Vec::new();
        loop {
            self.skip()?;
            match self.peek() {
                Some(']') => {
                    self.bump();
                    self.depth -= 1;
                    return Ok(Value::List(items));
                }
                None => {
                    return Err(self.error_at(open, "`[` not closed before the end of the file"))
                }
                Some(_) => {
                    items.push(self.value()?);
                    self.skip()?;
                    match self.peek() {
                        Some(',') => {
                            self.bump();
                        }
                        Some(']') => {}
                        None => {
                            return Err(
                                self.error_at(open, "`[` not closed before the end of the file")
                            )
                        }
                        found => {
                            return Err(self.error(format!(
                                "expected `,` or `]` in the list opened on line {open}, found {}",
                                describe(found)
                            )))
                        }
                    }
                }
            }
        }
    }

    fn number(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        let negative = match self.peek() {
            Some('-') => {
                self.bump();
                true
            }
            Some('+') => {
                self.bump();
                false
            }
            _ => false,
        };
        let digits_start = self.pos;
        let value = if self.rest().starts_with("0x") || self.rest().starts_with("0X") {
            self.bump();
            self.bump();
            let hex_start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                self.bump();
            }
            let magnitude = i64::from_str_radix(&self.text[hex_start..self.pos], 16)
                .map_err(|_| self.error("not a number (or out of range)"))?;
            Value::Integer(if negative { -magnitude } else { magnitude })
        } else {
            let mut float = false;
            self.digits();
            if self.peek() == Some('.') && self.peek2().is_some_and(|c| c.is_ascii_digit()) {
                float = true;
                self.bump();
                self.digits();
            }
            if matches!(self.peek(), Some('e' | 'E')) {
                float = true;
                self.bump();
                if matches!(self.peek(), Some('+' | '-')) {
                    self.bump();
                }
                self.digits();
            }
            let text = &self.text[start..self.pos];
            if self.pos == digits_start {
                return Err(self.error(format!("`{text}` is not a number")));
            }
            if float {
                Value::Float(
                    text.parse()
                        .map_err(|_| self.error(format!("`{text}` is not a number")))?,
                )
            } else {
                Value::Integer(
                    text.parse()
                        .map_err(|_| self.error(format!("`{text}` is out of range")))?,
                )
            }
        };
        // `10s` unquoted: the number runs into a word.
        if self.peek().is_some_and(is_ident_char) {
            while self.peek().is_some_and(is_ident_char) {
                self.bump();
            }
            let word = &self.text[start..self.pos];
            return Err(self.error(format!(
                "`{word}` is not a number: a string is quoted (\"{word}\")"
            )));
        }
        Ok(value)
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
    }

    /// A double-quoted string, its escapes read as Go reads them; `${…}` kept as written.
    fn string(&mut self) -> Result<String, Error> {
        let line = self.line;
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => {
                    return Err(self.error_at(line, "string not closed on its line"))
                }
                Some('"') => return Ok(out),
                Some('\\') => out.push(self.escape()?),
                Some('$') if self.peek() == Some('{') => {
                    self.bump();
                    out.push_str("${");
                    self.interpolation(&mut out, line)?;
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// The rest of a `${…}`, copied up to its closing brace (quoted strings and braces
    /// inside it included).
    fn interpolation(&mut self, out: &mut String, line: usize) -> Result<(), Error> {
        let mut depth = 1;
        let mut quoted = false;
        while depth > 0 {
            let c = match self.bump() {
                None | Some('\n') => {
                    return Err(self.error_at(line, "`${` not closed in its string"))
                }
                Some(c) => c,
            };
            out.push(c);
            match c {
                '\\' if quoted => {
                    if let Some(next) = self.bump() {
                        out.push(next);
                    }
                }
                '"' => quoted = !quoted,
                '{' if !quoted => depth += 1,
                '}' if !quoted => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn escape(&mut self) -> Result<char, Error> {
        let c = self
            .bump()
            .ok_or_else(|| self.error("string not closed on its line"))?;
        let simple = match c {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' | '"' | '\'' => Some(c),
            _ => None,
        };
        if let Some(s) = simple {
            return Ok(s);
        }
        let (len, radix) = match c {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (2, 8),
            _ => return Err(self.error(format!("unknown escape `\\{c}` in a string"))),
        };
        let mut digits = String::new();
        if radix == 8 {
            digits.push(c);
        }
        for _ in 0..len {
            match self.bump() {
                Some(d) if d.is_digit(radix) => digits.push(d),
                _ => return Err(self.error(format!("escape `\\{c}{digits}` is cut short"))),
            }
        }
        u32::from_str_radix(&digits, radix)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| self.error(format!("escape `\\{c}` is not a character")))
    }

    /// `<<EOF` … `EOF`, or `<<-EOF` whose closing marker may be indented (the lines lose
    /// that indentation when they all have it).
    fn heredoc(&mut self) -> Result<String, Error> {
        let line = self.line;
        self.bump();
        self.bump();
        let indented = self.peek() == Some('-');
        if indented {
            self.bump();
        }
        let marker = self.ident();
        if marker.is_empty() {
            return Err(self.error("expected a heredoc marker after `<<` (e.g. `<<EOF`)"));
        }
        // The marker ends its line.
        let Some(end) = self.rest().find('\n') else {
            return Err(self.error_at(line, format!("heredoc `{marker}` has no lines")));
        };
        if !self.rest()[..end].trim().is_empty() {
            return Err(self.error("a heredoc marker ends its line"));
        }
        for _ in 0..=end {
            self.bump();
        }
        let mut lines: Vec<&str> = Vec::new();
        loop {
            if self.peek().is_none() {
                return Err(self.error_at(line, format!("heredoc `{marker}` not closed")));
            }
            let end = self.rest().find('\n').unwrap_or(self.rest().len());
            let text = self.rest()[..end].trim_end_matches('\r');
            let closing = if indented {
                text.trim_start() == marker
            } else {
                text == marker
            };
            for _ in 0..end {
                self.bump();
            }
            if closing {
                let indent = &text[..text.len() - marker.len()];
                let mut out = String::new();
                let strip = indented && lines.iter().all(|l| l.starts_with(indent));
                for l in lines {
                    out.push_str(if strip { &l[indent.len()..] } else { l });
                    out.push('\n');
                }
                return Ok(out);
            }
            lines.push(text);
            self.bump();
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (!c.is_ascii() && c.is_alphabetic())
}

fn is_ident_char(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == '-' || c == '.'
}

fn describe(c: Option<char>) -> String {
    match c {
        None => "the end of the file".to_string(),
        Some('\n') => "the end of the line".to_string(),
        Some(c) => format!("`{c}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Object {
        match parse(text) {
            Ok(o) => o,
            Err(e) => panic!("{text:?} should parse: line {}: {}", e.line, e.message),
        }
    }

    /// The object as compact JSON-like text, to compare.
    fn show(object: &Object) -> String {
        fn value(v: &Value) -> String {
            match v {
                Value::String(s) => format!("{s:?}"),
                Value::Integer(i) => i.to_string(),
                Value::Float(x) => format!("{x:?}"),
                Value::Bool(b) => b.to_string(),
                Value::List(items) => format!(
                    "[{}]",
                    items
                        .iter()
                        .map(|n| value(&n.value))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Value::Object(o) => show(o),
            }
        }
        format!(
            "{{{}}}",
            object
                .iter()
                .map(|(k, n)| format!("{k}:{}", value(&n.value)))
                .collect::<Vec<_>>()
                .join(",")
        )
    }

    #[test]
    fn consuls_documented_forms() {
        let cases: &[(&str, &str)] = &[
            ("ports { dns = -1 }", r#"{ports:{dns:-1}}"#),
            (
                "ports = { dns = 8600, http = 8500 }",
                r#"{ports:{dns:8600,http:8500}}"#,
            ),
            (
                "dns_config {\n  service_ttl {\n    \"*\" = \"5s\"\n    \"db*\" = \"10s\"\n  }\n}",
                r#"{dns_config:{service_ttl:{*:"5s",db*:"10s"}}}"#,
            ),
            (
                "dns_config { service_ttl { \"*\" = \"5s\" } }",
                r#"{dns_config:{service_ttl:{*:"5s"}}}"#,
            ),
            (
                "\"dns_config\" {\n  \"allow_stale\" = true\n  \"max_stale\" = \"87600h\"\n}",
                r#"{dns_config:{allow_stale:true,max_stale:"87600h"}}"#,
            ),
            (
                "dns_config { soa { min_ttl = 30 } node_ttl = \"1s\" }",
                r#"{dns_config:{soa:{min_ttl:30},node_ttl:"1s"}}"#,
            ),
            (
                "check { id = \"x\" args = [\"a\", \"b\",] interval = \"10s\" }",
                r#"{check:{id:"x",args:["a","b"],interval:"10s"}}"#,
            ),
            (
                "recursors = [\"1.1.1.1\",\n  \"8.8.8.8\" # Google\n]",
                r#"{recursors:["1.1.1.1","8.8.8.8"]}"#,
            ),
            (
                "service \"web\" \"v1\" { port = 80 }",
                r#"{service:{web:{v1:{port:80}}}}"#,
            ),
            (
                "services = [{ name = \"a\" }, { name = \"b\" }]",
                r#"{services:[{name:"a"},{name:"b"}]}"#,
            ),
            (
                "a = 1.5\nb = 1e3\nc = 0x1F\nd = -2",
                "{a:1.5,b:1000.0,c:31,d:-2}",
            ),
            (
                "// c\n# c\n/* c\n c */ a = \"x\" /* c */, b = false",
                r#"{a:"x",b:false}"#,
            ),
            (
                r#"s = "tab\there \"q\" \u00e9 \x41 \101 ${lookup(x, "k")} $${x}""#,
                "{s:\"tab\\there \\\"q\\\" é A A ${lookup(x, \\\"k\\\")} $${x}\"}",
            ),
            (
                "h = <<EOF\nline 1\n  line 2\nEOF\n",
                r#"{h:"line 1\n  line 2\n"}"#,
            ),
            ("h = <<-EOF\n    a\n      b\n    EOF\n", r#"{h:"a\n  b\n"}"#),
            (
                "ports { dns = -1 }\nports { http = 8501 }\na = 1\na = 2",
                "{ports:{dns:-1,http:8501},a:2}",
            ),
            ("node-name.x = \"n\"", r#"{node-name.x:"n"}"#),
            ("", "{}"),
            ("\u{feff}a = 1", "{a:1}"),
        ];
        for (text, want) in cases {
            assert_eq!(show(&ok(text)), *want, "{text:?}");
        }
    }

    #[test]
    fn lines_are_kept() {
        let o = ok("\n\ndns_config {\n  node_ttl = \"1s\"\n}\nrecursors = [\n\"a\",\n\"b\"]");
        let (_, dns) = &o[0];
        assert_eq!(dns.line, Some(3));
        let Value::Object(inner) = &dns.value else {
            panic!("object")
        };
        assert_eq!(inner[0].1.line, Some(4));
        let Value::List(items) = &o[1].1.value else {
            panic!("list")
        };
        assert_eq!(o[1].1.line, Some(6));
        assert_eq!(items[1].line, Some(8));
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "a = 1\nb = \n",
                3,
                "expected a value, found the end of the file",
            ),
            ("a = 1\nb = foo", 2, "`foo` is not a value"),
            ("ttl = 10s", 1, "`10s` is not a number"),
            ("a {\n b = 1\n", 1, "`{` not closed"),
            ("a = [1, 2\n", 1, "`[` not closed"),
            ("a = [1 2]", 1, "expected `,` or `]`"),
            ("a = \"x\nb = 1", 1, "string not closed"),
            ("a = \"\\q\"", 1, "unknown escape"),
            ("a \"b\" = 1", 1, "`=` after the labels"),
            ("a : 1", 1, "expected `=` or `{` after the key `a`"),
            ("/* x", 1, "comment `/*` not closed"),
            ("x = <<EOF\nabc\n", 1, "heredoc `EOF` not closed"),
            ("[dns_config]\nnode_ttl = 1", 1, "expected a key"),
            ("{\"a\": 1}", 1, "expected a key"),
        ];
        for (text, line, want) in cases {
            match parse(text) {
                Ok(o) => panic!("{text:?} should fail, got {o:?}"),
                Err(e) => {
                    assert!(e.message.contains(want), "{text:?}: {}", e.message);
                    assert_eq!(e.line, *line, "{text:?}: {}", e.message);
                    assert!(!e.message.contains('\n'), "one line: {}", e.message);
                }
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("a = {}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(parse(&text).unwrap_err().message.contains("nested"));
    }

    #[test]
    fn blocks_tell_hcl_from_toml() {
        assert!(has_blocks("ports {\n dns = -1\n}\n"));
        assert!(!has_blocks("domain = \"x\"\ndomain = \"y\"\n"));
        assert!(!has_blocks("soa = { min_ttl = 1 }\n"));
        assert!(!has_blocks("[dns_config]\nnode_ttl = \"1s\"\n"));
    }
}
