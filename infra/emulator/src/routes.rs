//! The routes file (`routes.toml`): its format, its validation and the route
//! table built from it.
//!
//! The file is the single source of truth for which function serves which
//! method and path, and for each function's settings. Loading rejects anything
//! the emulator could not serve faithfully (unknown keys, duplicate routes,
//! paths under the emulator's own `/_emulator/` prefix...), so `--check` in CI
//! catches a typo before a deployment does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use http::Method;
use serde::Deserialize;

/// Reserved path prefix of the emulator's own endpoints (health).
pub const RESERVED_PREFIX: &str = "/_emulator";

/// Lambda's own bounds for a function's timeout (seconds).
const MAX_TIMEOUT_SECONDS: f64 = 900.0;
/// Lambda's own bounds for a function's memory size (MB).
const MEMORY_RANGE_MB: std::ops::RangeInclusive<u32> = 128..=10_240;

/// What can be wrong with a routes file.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    /// The file could not be read.
    #[error("cannot read routes file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("routes file {path} is malformed: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The file parses, but says something the emulator cannot serve.
    #[error("routes file is invalid: {0}")]
    Invalid(String),
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    routes: Vec<RouteSpec>,
    #[serde(default)]
    functions: BTreeMap<String, FunctionFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    method: String,
    path: String,
    function: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionFile {
    binary: String,
    /// Seconds; a fraction is accepted so tests can use short timeouts.
    timeout_seconds: f64,
    memory_mb: u32,
    #[serde(default)]
    min_warm: usize,
    max_concurrency: usize,
    /// Optional per-function queue depth (else the global one).
    #[serde(default)]
    queue_depth: Option<usize>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// One function's settings, validated.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`).
    pub name: String,
    /// The executable's file name, resolved in the binaries directory.
    pub binary: String,
    /// How long one invocation may run.
    pub timeout: Duration,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (informative: nothing enforces it).
    pub memory_mb: u32,
    /// Instances kept warm at all times.
    pub min_warm: usize,
    /// Instances (and so invocations) at most at once.
    pub max_concurrency: usize,
    /// Queue depth for this function, overriding the global setting.
    pub queue_depth: Option<usize>,
    /// Extra environment for the function's processes.
    pub env: BTreeMap<String, String>,
}

/// One segment of a route's path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must equal the request's segment.
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param(String),
    /// `{name+}`: the rest of the path, one or more segments (last only).
    Greedy(String),
}

impl Segment {
    /// Sort key: literal segments are more specific than parameters, which
    /// are more specific than a greedy tail (API Gateway's precedence).
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Param(_) => 1,
            Segment::Greedy(_) => 2,
        }
    }
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// `None` means `ANY`.
    method: Option<Method>,
    segments: Vec<Segment>,
    /// Index into [`RouteTable::functions`].
    pub function: usize,
    /// API Gateway's `routeKey`, e.g. `POST /api/v1/users`.
    pub route_key: String,
}

/// The result of matching a request against the table.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    /// A route serves this method and path.
    Found {
        /// The route.
        route: &'a Route,
        /// `pathParameters`, decoded.
        params: HashMap<String, String>,
    },
    /// Some route has this path, none this method.
    MethodNotAllowed {
        /// The methods that do exist for the path, for `Allow`.
        allow: Vec<String>,
    },
    /// No route has this path.
    NotFound,
}

/// The loaded routes file: functions and the route table.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// The functions, in name order.
    pub functions: Vec<FunctionSpec>,
    /// The routes, most specific first.
    routes: Vec<Route>,
}

impl RouteTable {
    /// Reads and validates a routes file.
    pub fn load(path: &Path) -> Result<Self, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|err| match err {
            RoutesError::Parse { source, .. } => RoutesError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates the text of a routes file.
    pub fn parse(text: &str) -> Result<Self, RoutesError> {
        let file: RoutesFile = toml::from_str(text).map_err(|source| RoutesError::Parse {
            path: String::new(),
            source: Box::new(source),
        })?;
        let invalid = |msg: String| RoutesError::Invalid(msg);

        let mut functions = Vec::with_capacity(file.functions.len());
        let mut index = HashMap::new();
        for (name, f) in file.functions {
            validate_function(&name, &f).map_err(invalid)?;
            index.insert(name.clone(), functions.len());
            functions.push(FunctionSpec {
                name,
                binary: f.binary,
                timeout: Duration::from_secs_f64(f.timeout_seconds),
                memory_mb: f.memory_mb,
                min_warm: f.min_warm,
                max_concurrency: f.max_concurrency,
                queue_depth: f.queue_depth,
                env: f.env,
            });
        }
        if file.routes.is_empty() {
            return Err(invalid("no [[routes]] defined".into()));
        }

        let mut routes = Vec::with_capacity(file.routes.len());
        // Two routes conflict when method and path shape are equal, whatever
        // their parameter names: the second could never be reached.
        let mut seen = HashSet::new();
        let mut used = HashSet::new();
        for spec in file.routes {
            let method = parse_method(&spec.method).map_err(invalid)?;
            let segments = parse_path(&spec.path).map_err(invalid)?;
            let Some(&function) = index.get(&spec.function) else {
                return Err(invalid(format!(
                    "route {} {} names function {:?}, which has no [functions.{}] table",
                    spec.method, spec.path, spec.function, spec.function
                )));
            };
            let shape: Vec<String> = segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => format!("/{l}"),
                    Segment::Param(_) => "/{}".into(),
                    Segment::Greedy(_) => "/{+}".into(),
                })
                .collect();
            let method_key = method.as_ref().map_or("ANY", Method::as_str).to_owned();
            if !seen.insert((method_key.clone(), shape)) {
                return Err(invalid(format!(
                    "route {method_key} {} is defined twice",
                    spec.path
                )));
            }
            used.insert(function);
            routes.push(Route {
                method,
                segments,
                function,
                route_key: format!("{method_key} {}", spec.path),
            });
        }
        for (i, f) in functions.iter().enumerate() {
            if !used.contains(&i) {
                return Err(invalid(format!(
                    "function {:?} is defined but no route uses it",
                    f.name
                )));
            }
        }
        // Most specific first: segment by segment, literal < param < greedy;
        // then routes with a method before ANY.
        routes.sort_by(|a, b| {
            let ka: Vec<u8> = a.segments.iter().map(Segment::rank).collect();
            let kb: Vec<u8> = b.segments.iter().map(Segment::rank).collect();
            ka.cmp(&kb)
                .then(b.segments.len().cmp(&a.segments.len()))
                .then(a.method.is_none().cmp(&b.method.is_none()))
        });
        Ok(Self { functions, routes })
    }

    /// Finds the route for a request.
    pub fn find(&self, method: &Method, path: &str) -> RouteMatch<'_> {
        let parts = split_path(path);
        let mut allow: Vec<String> = Vec::new();
        for route in &self.routes {
            let Some(params) = match_segments(&route.segments, &parts) else {
                continue;
            };
            match &route.method {
                None => return RouteMatch::Found { route, params },
                Some(m) if m == method => return RouteMatch::Found { route, params },
                Some(m) => {
                    if !allow.iter().any(|a| a == m.as_str()) {
                        allow.push(m.as_str().to_owned());
                    }
                }
            }
        }
        if allow.is_empty() {
            RouteMatch::NotFound
        } else {
            RouteMatch::MethodNotAllowed { allow }
        }
    }
}

fn validate_function(name: &str, f: &FunctionFile) -> Result<(), String> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(format!(
            "function name {name:?} must be 1 to 64 characters of letters, digits, '-' or '_' (as in Lambda)"
        ));
    }
    if f.binary.is_empty() || f.binary.contains('/') || f.binary == "." || f.binary == ".." {
        return Err(format!(
            "function {name}: binary {:?} must be a plain file name (it is resolved in the binaries directory)",
            f.binary
        ));
    }
    if !(f.timeout_seconds > 0.0 && f.timeout_seconds <= MAX_TIMEOUT_SECONDS) {
        return Err(format!(
            "function {name}: timeout_seconds must be above 0 and at most {MAX_TIMEOUT_SECONDS}"
        ));
    }
    if !MEMORY_RANGE_MB.contains(&f.memory_mb) {
        return Err(format!(
            "function {name}: memory_mb must be within {}..={} (Lambda's range)",
            MEMORY_RANGE_MB.start(),
            MEMORY_RANGE_MB.end()
        ));
    }
    if f.max_concurrency == 0 {
        return Err(format!(
            "function {name}: max_concurrency must be at least 1"
        ));
    }
    if f.min_warm > f.max_concurrency {
        return Err(format!(
            "function {name}: min_warm ({}) exceeds max_concurrency ({})",
            f.min_warm, f.max_concurrency
        ));
    }
    if f.queue_depth == Some(0) {
        return Err(format!(
            "function {name}: queue_depth must be at least 1 when set"
        ));
    }
    for key in f.env.keys() {
        let ok = !key.is_empty()
            && !key.contains('=')
            && !key.contains('\0')
            && !key.starts_with("AWS_LAMBDA_RUNTIME_API");
        if !ok {
            return Err(format!(
                "function {name}: environment variable name {key:?} is not allowed"
            ));
        }
    }
    Ok(())
}

fn parse_method(m: &str) -> Result<Option<Method>, String> {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    if m == "ANY" {
        return Ok(None);
    }
    if !KNOWN.contains(&m) {
        return Err(format!(
            "method {m:?} is not one of {} or ANY (upper case)",
            KNOWN.join(", ")
        ));
    }
    Method::from_bytes(m.as_bytes())
        .map(Some)
        .map_err(|e| format!("method {m:?}: {e}"))
}

fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    if path == RESERVED_PREFIX || path.starts_with(&format!("{RESERVED_PREFIX}/")) {
        return Err(format!(
            "path {path:?} is under {RESERVED_PREFIX}/, which the emulator reserves for itself"
        ));
    }
    if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "path {path:?} must not contain a query, fragment or whitespace"
        ));
    }
    let parts = split_path(path);
    let mut segments = Vec::with_capacity(parts.len());
    let mut names = HashSet::new();
    for (i, part) in parts.iter().enumerate() {
        let segment = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
        {
            let (name, greedy) = match inner.strip_suffix('+') {
                Some(n) => (n, true),
                None => (inner, false),
            };
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!(
                    "path {path:?}: parameter {part:?} has an invalid name"
                ));
            }
            if !names.insert(name.to_owned()) {
                return Err(format!("path {path:?}: parameter {name:?} appears twice"));
            }
            if greedy {
                if i + 1 != parts.len() {
                    return Err(format!(
                        "path {path:?}: greedy parameter {part:?} must be the last segment"
                    ));
                }
                Segment::Greedy(name.to_owned())
            } else {
                Segment::Param(name.to_owned())
            }
        } else {
            if part.contains(['{', '}']) {
                return Err(format!(
                    "path {path:?}: a parameter must be a whole segment, like /{{id}}"
                ));
            }
            Segment::Literal((*part).to_owned())
        };
        segments.push(segment);
    }
    Ok(segments)
}

/// Splits a path into its segments; the root `/` has none. A trailing slash
/// yields a final empty segment, so `/a/` is not `/a` (as in API Gateway).
fn split_path(path: &str) -> Vec<&str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

fn match_segments(pattern: &[Segment], parts: &[&str]) -> Option<HashMap<String, String>> {
    let mut params = HashMap::new();
    for (i, segment) in pattern.iter().enumerate() {
        match segment {
            Segment::Literal(l) => {
                if parts.get(i) != Some(&l.as_str()) {
                    return None;
                }
            }
            Segment::Param(name) => {
                let part = parts.get(i).filter(|p| !p.is_empty())?;
                params.insert(name.clone(), decode(part));
            }
            Segment::Greedy(name) => {
                let rest = parts.get(i..).filter(|r| !r.is_empty())?;
                let joined = rest.join("/");
                if joined.is_empty() {
                    return None;
                }
                params.insert(name.clone(), decode(&joined));
                return Some(params);
            }
        }
    }
    (pattern.len() == parts.len()).then_some(params)
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[[routes]]
method = "POST"
path = "/api/v1/users"
function = "register"

[[routes]]
method = "GET"
path = "/api/v1/users/{id}"
function = "register"

[[routes]]
method = "POST"
path = "/api/v1/users/login"
function = "register"

[[routes]]
method = "ANY"
path = "/files/{path+}"
function = "register"

[functions.register]
binary = "register"
timeout_seconds = 10
memory_mb = 256
min_warm = 1
max_concurrency = 4
[functions.register.env]
A = "b"
"#;

    #[test]
    fn the_repository_routes_file_is_valid() {
        let text = include_str!("../../routes.toml");
        let table = RouteTable::parse(text).unwrap();
        let names: Vec<_> = table.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["jwks", "login", "register"]);
        for (method, path, function) in [
            (Method::POST, "/api/v1/users", "register"),
            (Method::POST, "/api/v1/users/login", "login"),
            (Method::GET, "/.well-known/jwks.json", "jwks"),
        ] {
            match table.find(&method, path) {
                RouteMatch::Found { route, .. } => {
                    assert_eq!(table.functions[route.function].name, function)
                }
                other => panic!("{method} {path}: {other:?}"),
            }
        }
    }

    #[test]
    fn literal_routes_win_over_parameters_and_params_are_decoded() {
        let table = RouteTable::parse(BASE).unwrap();
        match table.find(&Method::POST, "/api/v1/users/login") {
            RouteMatch::Found { route, params } => {
                assert_eq!(route.route_key, "POST /api/v1/users/login");
                assert!(params.is_empty());
            }
            other => panic!("{other:?}"),
        }
        match table.find(&Method::GET, "/api/v1/users/a%20b") {
            RouteMatch::Found { route, params } => {
                assert_eq!(route.route_key, "GET /api/v1/users/{id}");
                assert_eq!(params["id"], "a b");
            }
            other => panic!("{other:?}"),
        }
        match table.find(&Method::DELETE, "/files/a/b/c") {
            RouteMatch::Found { params, .. } => assert_eq!(params["path"], "a/b/c"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            table.find(&Method::GET, "/files"),
            RouteMatch::NotFound
        ));
    }

    #[test]
    fn wrong_method_lists_the_allowed_ones_and_unknown_paths_are_not_found() {
        let table = RouteTable::parse(BASE).unwrap();
        match table.find(&Method::GET, "/api/v1/users") {
            RouteMatch::MethodNotAllowed { allow } => assert_eq!(allow, ["POST"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            table.find(&Method::GET, "/api/v1/users/"),
            RouteMatch::NotFound
        ));
        assert!(matches!(
            table.find(&Method::GET, "/nope"),
            RouteMatch::NotFound
        ));
        assert!(matches!(
            table.find(&Method::GET, "/"),
            RouteMatch::NotFound
        ));
    }

    fn invalid(text: &str) -> String {
        match RouteTable::parse(text) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted:\n{text}"),
        }
    }

    #[test]
    fn reserved_duplicate_and_malformed_routes_are_rejected() {
        let reserved = BASE.replace("/files/{path+}", "/_emulator/health/live");
        assert!(invalid(&reserved).contains("reserves"));
        let dup = BASE
            .replace("/api/v1/users/{id}", "/api/v1/users/{other}")
            .replace(
                "method = \"POST\"\npath = \"/api/v1/users/login\"",
                "method = \"GET\"\npath = \"/api/v1/users/{x}\"",
            );
        assert!(invalid(&dup).contains("twice"));
        let unknown_fn = BASE.replace(
            "function = \"register\"\n\n[functions",
            "function = \"nope\"\n\n[functions",
        );
        assert!(invalid(&unknown_fn).contains("nope"));
        let typo = BASE.replace("min_warm", "min_wram");
        assert!(invalid(&typo).contains("min_wram"));
        let greedy = BASE.replace("/files/{path+}", "/files/{path+}/x");
        assert!(invalid(&greedy).contains("last"));
        let method = BASE.replace("\"ANY\"", "\"get\"");
        assert!(invalid(&method).contains("method"));
        let too_warm = BASE.replace("min_warm = 1", "min_warm = 5");
        assert!(invalid(&too_warm).contains("min_warm"));
        let bad_binary = BASE.replace("binary = \"register\"", "binary = \"../x\"");
        assert!(invalid(&bad_binary).contains("plain file name"));
        let half_param = BASE.replace("{id}", "x{id}");
        assert!(invalid(&half_param).contains("whole segment"));
    }
}
