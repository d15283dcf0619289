//! CORS: which browser origins may read our answers, and the preflight.

use super::response::{Headers, Response};

/// Methods a browser is told it may use (CORS preflight).
pub const CORS_ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Request headers a browser is told it may send (CORS preflight).
pub const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// How long a browser may cache a preflight answer, in seconds.
pub const CORS_MAX_AGE_S: &str = "600";

/// Which browser origins may read our responses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    /// `*` was configured: any origin, without credentials.
    pub any: bool,
    /// Specific origins: echoed back, with credentials allowed.
    pub origins: Vec<String>,
}

impl Cors {
    /// Whether `origin` is one of the listed origins (`*` lists none).
    pub fn lists(&self, origin: &str) -> bool {
        self.origins.iter().any(|l| l == origin)
    }

    pub fn from_list(list: &[String]) -> Cors {
        Cors {
            any: list.iter().any(|o| o == "*"),
            origins: list.iter().filter(|o| *o != "*").cloned().collect(),
        }
    }

    /// The CORS headers of a response to a request from `origin`.
    /// A listed origin is echoed with `Access-Control-Allow-Credentials`
    /// (cookies or auth headers may ride along); `*` never comes with
    /// credentials (browsers refuse that pair). When the answer depends on
    /// the origin, `Vary: Origin` keeps caches from mixing them up.
    pub fn headers(&self, origin: Option<&str>) -> Headers {
        let mut out = Headers::new();
        if !self.origins.is_empty() {
            out.push(("Vary", "Origin".to_string()));
            if let Some(o) = origin.filter(|o| self.origins.iter().any(|l| l == o)) {
                out.push(("Access-Control-Allow-Origin", o.to_string()));
                out.push(("Access-Control-Allow-Credentials", "true".to_string()));
                return out;
            }
        }
        if self.any {
            out.push(("Access-Control-Allow-Origin", "*".to_string()));
        }
        out
    }
}

/// The answer to `OPTIONS`: what may be sent here. The CORS headers are
/// added by [`super::route`]; without a matching origin the browser refuses.
pub(super) fn preflight(allow: &'static str, keep_alive: bool) -> Response {
    let mut r = Response::text(204, "", keep_alive);
    r.body.clear();
    r.allow = Some(allow);
    r.headers.extend([
        (
            "Access-Control-Allow-Methods",
            CORS_ALLOW_METHODS.to_string(),
        ),
        (
            "Access-Control-Allow-Headers",
            CORS_ALLOW_HEADERS.to_string(),
        ),
        ("Access-Control-Max-Age", CORS_MAX_AGE_S.to_string()),
    ]);
    r
}
