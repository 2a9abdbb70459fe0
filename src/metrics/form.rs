//! The name forms a query is counted by (`dns_queries_total{form}`) and logged with: what
//! the question asked for, as the answer path read it. A bounded set, named here once:
//! label values never come from the network.

/// What a question's name is, as answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NameForm {
    /// `[tag.]<svc>.service…` and RFC 2782 `_svc._tag…`.
    Service,
    /// `<svc>.connect…`.
    Connect,
    /// `<svc>.ingress…`.
    Ingress,
    /// `<svc>.virtual…`.
    Virtual,
    /// `<node>.node…`.
    Node,
    /// `<hex>.addr…`.
    Addr,
    /// `<name>.query…`: a prepared query.
    Query,
    /// The Consul domain itself (its SOA, NS).
    Apex,
    /// A name above names that exist (`service.consul`, `dc1.consul`): NODATA.
    Ancestor,
    /// A name under the Consul domain that is none of the forms: NXDOMAIN.
    Invalid,
    /// A zone transfer question (AXFR, IXFR) of the Consul domain.
    Transfer,
    /// A reverse name (`in-addr.arpa`, `ip6.arpa`) answered from the view, or as Consul
    /// answers one it does not know.
    Reverse,
    /// A name of a static zone.
    Static,
    /// A name passed on to the recursors.
    Forwarded,
    /// A name outside every zone served, refused (no recursors, or a client outside
    /// `allow_recursion`).
    Outside,
    /// No name to go by: a malformed message, an opcode other than QUERY, a class other
    /// than IN, several questions.
    #[default]
    Other,
}

impl NameForm {
    /// Every form, in the order of their indexes.
    pub const ALL: [NameForm; 16] = [
        NameForm::Service,
        NameForm::Connect,
        NameForm::Ingress,
        NameForm::Virtual,
        NameForm::Node,
        NameForm::Addr,
        NameForm::Query,
        NameForm::Apex,
        NameForm::Ancestor,
        NameForm::Invalid,
        NameForm::Transfer,
        NameForm::Reverse,
        NameForm::Static,
        NameForm::Forwarded,
        NameForm::Outside,
        NameForm::Other,
    ];

    /// Its label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            NameForm::Service => "service",
            NameForm::Connect => "connect",
            NameForm::Ingress => "ingress",
            NameForm::Virtual => "virtual",
            NameForm::Node => "node",
            NameForm::Addr => "addr",
            NameForm::Query => "query",
            NameForm::Apex => "apex",
            NameForm::Ancestor => "ancestor",
            NameForm::Invalid => "invalid",
            NameForm::Transfer => "transfer",
            NameForm::Reverse => "reverse",
            NameForm::Static => "static",
            NameForm::Forwarded => "forwarded",
            NameForm::Outside => "outside",
            NameForm::Other => "other",
        }
    }

    /// Its index in [`NameForm::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::NameForm;

    #[test]
    fn indexes_follow_all() {
        for (i, form) in NameForm::ALL.iter().enumerate() {
            assert_eq!(form.index(), i, "{form:?}");
        }
        let mut names: Vec<_> = NameForm::ALL.iter().map(|f| f.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NameForm::ALL.len());
    }
}
