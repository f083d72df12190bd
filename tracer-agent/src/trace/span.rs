//! The span the agent exports, independent of the output format, and the resource of the
//! process it comes from.

use std::{fmt, sync::Arc};

use super::ids::{SpanId, TraceId};
use crate::protocol::{Role, http::Text};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Server,
    Client,
}

impl From<Role> for SpanKind {
    fn from(role: Role) -> Self {
        match role {
            Role::Server => Self::Server,
            Role::Client => Self::Client,
        }
    }
}

impl SpanKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "SERVER",
            Self::Client => "CLIENT",
        }
    }
}

/// An attribute value. Text is shared, not copied, on its way to the exporters.
#[derive(Clone, Debug)]
pub enum AttrValue {
    /// Text of this span (a path, an address): usually a slice of the captured head itself.
    Str(Text),
    /// Text the same for every span (a method, a scheme, a protocol version).
    Static(&'static str),
    Int(i64),
    Bool(bool),
}

impl AttrValue {
    /// The value as text, if it is text.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            Self::Static(s) => Some(s),
            Self::Int(_) | Self::Bool(_) => None,
        }
    }
}

impl PartialEq for AttrValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => a == b,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            _ => self.as_str().is_some() && self.as_str() == other.as_str(),
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => f.write_str(s),
            Self::Static(s) => f.write_str(s),
            Self::Int(i) => write!(f, "{i}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned().into())
    }
}

impl From<Text> for AttrValue {
    fn from(t: Text) -> Self {
        Self::Str(t)
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        Self::Str(s.into())
    }
}

impl From<i64> for AttrValue {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<bool> for AttrValue {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

/// The resource of one traced process (see `procs::resource` for where it comes from).
#[derive(Debug, PartialEq)]
pub struct Resource {
    pub service_name: String,
    pub pid: u32,
    pub attributes: Vec<(String, AttrValue)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Unset,
    Error(String),
}

#[derive(Clone, Debug)]
#[expect(
    clippy::struct_field_names,
    reason = "span_id and friends are the OpenTelemetry names"
)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub kind: SpanKind,
    /// HTTP: the method, or `HTTP` for one that is not standard; gRPC:
    /// `package.Service/Method`. Shared text, cheap to clone.
    pub name: Text,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub status: Status,
    pub resource: Arc<Resource>,
}

impl Span {
    #[must_use]
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}
