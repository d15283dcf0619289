//! Topic selectors and patterns: what a token's `publish`/`subscribe` claim
//! names, and what a stream may subscribe to besides exact topics.
//!
//! One grammar serves both, so a pattern a stream subscribes to and a
//! selector in a token mean the same set of topics:
//! - an exact topic: `orders/42` (the topic charset, `A-Z a-z 0-9 - _ . : /`);
//! - `*`: every topic;
//! - a prefix: `orders/42/*` matches every topic that starts with
//!   `orders/42/` and has at least one byte after it (`orders/42/x`,
//!   `orders/42/x/y`), not `orders/42` nor `orders/42/`;
//! - a URI template with simple variables (RFC 6570 level 1):
//!   `https://example.com/books/{id}`; a variable matches one or more bytes
//!   of one segment (never a `/`), and may sit beside literals in a segment
//!   (`books/{id}.json`). A template may end in `/*` too (`users/{id}/*`).
//!
//! Operators (`{+path}`, `{?q}`), modifiers (`{id:3}`, `{list*}`), a `*`
//! anywhere but as the whole last segment, and two variables with no
//! literal between them are refused with an error that says so: each would
//! make matching either ambiguous or unbounded.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::hub::topic::is_topic_byte;

/// Default of [`PatternLimits::bytes_max`]: a pattern or selector's length.
/// Topics are at most `--topic-bytes-max` (128 by default); a template's
/// variable names make it longer than the topics it matches.
pub const PATTERN_BYTES_MAX_DEFAULT: usize = 512;
/// Default of [`PatternLimits::vars_max`]: variables in one pattern.
pub const PATTERN_VARS_MAX_DEFAULT: usize = 16;

/// Bounds on one pattern, so matching stays cheap whatever a client or a
/// token issuer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternLimits {
    pub bytes_max: usize,
    pub vars_max: usize,
}

impl Default for PatternLimits {
    fn default() -> Self {
        PatternLimits {
            bytes_max: PATTERN_BYTES_MAX_DEFAULT,
            vars_max: PATTERN_VARS_MAX_DEFAULT,
        }
    }
}

/// Why a pattern is refused. Each variant says what to fix; `at` is a byte
/// offset in the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    Empty,
    TooLong { len_bytes: usize, max_bytes: usize },
    TooManyVariables { max: usize },
    BadChar { ch: char, at: usize },
    MisplacedStar { at: usize },
    UnclosedVariable { at: usize },
    StrayBrace { at: usize },
    EmptyVariable { at: usize },
    UnsupportedExpression { at: usize },
    AdjacentVariables { at: usize },
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PatternError::*;
        match self {
            Empty => f.write_str("pattern is empty"),
            TooLong {
                len_bytes,
                max_bytes,
            } => write!(
                f,
                "pattern is {len_bytes} bytes, longer than the {max_bytes} allowed"
            ),
            TooManyVariables { max } => write!(f, "pattern has more than {max} variables"),
            BadChar { ch, at } => write!(
                f,
                "pattern has {ch:?} at byte {at}; allowed are A-Z a-z 0-9 - _ . : /, \
                 {{name}} variables and a final /*"
            ),
            MisplacedStar { at } => write!(
                f,
                "pattern has '*' at byte {at}; '*' is only allowed alone or as the whole \
                 last segment (prefix/*)"
            ),
            UnclosedVariable { at } => write!(f, "pattern has '{{' at byte {at} without '}}'"),
            StrayBrace { at } => write!(f, "pattern has '}}' at byte {at} without '{{'"),
            EmptyVariable { at } => write!(f, "pattern has an empty variable {{}} at byte {at}"),
            UnsupportedExpression { at } => write!(
                f,
                "pattern has an unsupported template expression at byte {at}; only simple \
                 {{name}} variables (A-Z a-z 0-9 _ .) are supported"
            ),
            AdjacentVariables { at } => write!(
                f,
                "pattern has two variables with nothing between them at byte {at}"
            ),
        }
    }
}

impl std::error::Error for PatternError {}

/// One piece of a segment that mixes literals and variables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Piece {
    Lit(Box<str>),
    /// One or more bytes, no `/`. Names are dropped: `{id}` and `{x}` match
    /// the same topics.
    Var,
}

/// One `/`-separated segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    /// Exactly this text (possibly empty: `a//b`).
    Lit(Box<str>),
    /// A whole-segment variable: any non-empty segment.
    Var,
    /// Literals and variables, never two variables side by side.
    Mixed(Box<[Piece]>),
}

impl Segment {
    /// Whether `seg` (one topic segment, no `/`) matches.
    pub(crate) fn matches(&self, seg: &str) -> bool {
        match self {
            Segment::Lit(l) => **l == *seg,
            Segment::Var => !seg.is_empty(),
            Segment::Mixed(pieces) => mixed_matches(pieces, seg),
        }
    }

    /// Whether every segment this one's counterpart `other` matches is
    /// matched by `self` too. Conservative: `false` when not provable.
    fn covers(&self, other: &Segment) -> bool {
        match (self, other) {
            (Segment::Lit(a), Segment::Lit(b)) => a == b,
            (Segment::Var, Segment::Lit(b)) => !b.is_empty(),
            (Segment::Var, Segment::Var | Segment::Mixed(_)) => true,
            (Segment::Mixed(_), Segment::Lit(b)) => self.matches(b),
            (Segment::Mixed(a), Segment::Mixed(b)) => a == b,
            (Segment::Lit(_), _) | (Segment::Mixed(_), Segment::Var) => false,
        }
    }
}

/// Match `pieces` (no two `Var` side by side, at least one `Var`) against
/// one segment. A variable takes one or more bytes; taking each middle
/// literal at its leftmost place leaves the most room for what follows,
/// so one left-to-right pass decides (no backtracking).
pub(crate) fn mixed_matches(pieces: &[Piece], seg: &str) -> bool {
    let s = seg.as_bytes();
    let (mut lo, mut hi) = (0, s.len());
    let (mut first, mut last) = (0, pieces.len());
    if let Some(Piece::Lit(a)) = pieces.first() {
        if !s.starts_with(a.as_bytes()) {
            return false;
        }
        lo = a.len();
        first = 1;
    }
    if last > first {
        if let Some(Piece::Lit(z)) = pieces.last() {
            if hi < lo + z.len() || !s[lo..].ends_with(z.as_bytes()) {
                return false;
            }
            hi -= z.len();
            last -= 1;
        }
    }
    // What is left starts and ends with a variable (or is empty).
    let mut cur = lo;
    for piece in &pieces[first..last] {
        match piece {
            Piece::Var => cur += 1,
            Piece::Lit(l) => {
                if cur > hi {
                    return false;
                }
                match find(&s[cur..hi], l.as_bytes()) {
                    Some(i) => cur += i + l.len(),
                    None => return false,
                }
            }
        }
    }
    cur <= hi && (first < last || lo == hi)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a pattern is, for callers that route exact topics elsewhere (the
/// hub's topic index) and patterns through a
/// [`PatternIndex`](super::pattern_index::PatternIndex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// An exact topic: no variable, no `*`.
    Exact,
    /// `*`: every topic.
    Any,
    /// `prefix/*` with a literal prefix.
    Prefix,
    /// At least one variable (and maybe a final `/*`).
    Template,
}

/// A validated pattern or selector. Equality and hashing ignore variable
/// names: `books/{id}` and `books/{x}` are the same pattern.
#[derive(Clone)]
pub struct Pattern {
    text: Box<str>,
    pub(crate) segments: Box<[Segment]>,
    /// Ends in `/*` (or is `*`): one or more further bytes, any segments.
    pub(crate) tail: bool,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.tail == other.tail && self.segments == other.segments
    }
}
impl Eq for Pattern {}
impl Hash for Pattern {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.segments.hash(state);
        self.tail.hash(state);
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Pattern {
    /// Validate `text` against the grammar in the module doc.
    pub fn parse(text: &str, limits: &PatternLimits) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > limits.bytes_max {
            return Err(PatternError::TooLong {
                len_bytes: text.len(),
                max_bytes: limits.bytes_max,
            });
        }
        let (body, tail) = match text.strip_suffix("/*") {
            Some(prefix) => (prefix, true),
            None => (text, text == "*"),
        };
        let mut segments = Vec::new();
        let mut vars = 0usize;
        // `*` alone has no segment; `/*` has one, empty (topics under "/").
        if text != "*" {
            let mut at = 0usize;
            for seg in body.split('/') {
                segments.push(parse_segment(seg, at, &mut vars, limits)?);
                at += seg.len() + 1;
            }
        }
        Ok(Pattern {
            text: text.into(),
            segments: segments.into_boxed_slice(),
            tail,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn kind(&self) -> PatternKind {
        let literal = self.segments.iter().all(|s| matches!(s, Segment::Lit(_)));
        match (literal, self.tail) {
            (true, false) => PatternKind::Exact,
            (true, true) if self.segments.is_empty() => PatternKind::Any,
            (true, true) => PatternKind::Prefix,
            (false, _) => PatternKind::Template,
        }
    }

    /// An exact topic (its text is the topic), which belongs in the hub's
    /// topic index rather than a pattern index.
    pub fn is_exact(&self) -> bool {
        self.kind() == PatternKind::Exact
    }

    /// Whether `topic` is one of the topics this pattern names.
    pub fn matches(&self, topic: &str) -> bool {
        let mut rest = Some(topic);
        for seg in self.segments.iter() {
            let Some(r) = rest else { return false };
            let (part, after) = match r.split_once('/') {
                Some((p, a)) => (p, Some(a)),
                None => (r, None),
            };
            if !seg.matches(part) {
                return false;
            }
            rest = after;
        }
        match rest {
            None => !self.tail,
            Some(r) => self.tail && !r.is_empty(),
        }
    }

    /// Whether every topic `other` matches is matched by `self` too: may a
    /// token holding selector `self` subscribe to pattern `other`? Exact
    /// for exact topics; for patterns it is conservative (it may say no to
    /// a pattern that is in fact covered, never yes to one that is not):
    /// `*`, an equal pattern, a shorter prefix, and templates whose
    /// segments each cover the other's are recognised.
    pub fn covers_pattern(&self, other: &Pattern) -> bool {
        if other.is_exact() {
            return self.matches(other.as_str());
        }
        let (n, m) = (self.segments.len(), other.segments.len());
        if m < n {
            return false;
        }
        let segments_cover = self
            .segments
            .iter()
            .zip(other.segments.iter())
            .all(|(s, o)| s.covers(o));
        if !segments_cover {
            return false;
        }
        if !self.tail {
            return m == n && !other.tail;
        }
        // `self` needs at least one byte after its n segments and their `/`.
        match m - n {
            0 => other.tail,
            1 => other.tail || other.segments[n] != Segment::Lit("".into()),
            _ => true,
        }
    }
}

fn parse_segment(
    seg: &str,
    at: usize,
    vars: &mut usize,
    limits: &PatternLimits,
) -> Result<Segment, PatternError> {
    let b = seg.as_bytes();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut lit_start = 0usize;
    let mut i = 0usize;
    while i < b.len() {
        match b[i] {
            b'{' => {
                if i > lit_start {
                    pieces.push(Piece::Lit(seg[lit_start..i].into()));
                }
                let close = b[i..]
                    .iter()
                    .position(|&c| c == b'}')
                    .ok_or(PatternError::UnclosedVariable { at: at + i })?;
                let name = &b[i + 1..i + close];
                if name.is_empty() {
                    return Err(PatternError::EmptyVariable { at: at + i });
                }
                let simple = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.';
                if !name.iter().all(simple) || name[0] == b'.' {
                    return Err(PatternError::UnsupportedExpression { at: at + i });
                }
                if matches!(pieces.last(), Some(Piece::Var)) {
                    return Err(PatternError::AdjacentVariables { at: at + i });
                }
                *vars += 1;
                if *vars > limits.vars_max {
                    return Err(PatternError::TooManyVariables {
                        max: limits.vars_max,
                    });
                }
                pieces.push(Piece::Var);
                i += close + 1;
                lit_start = i;
            }
            b'}' => return Err(PatternError::StrayBrace { at: at + i }),
            b'*' => return Err(PatternError::MisplacedStar { at: at + i }),
            c if is_topic_byte(c) => i += 1,
            _ => {
                let ch = seg[i..].chars().next().unwrap_or('\u{fffd}');
                return Err(PatternError::BadChar { ch, at: at + i });
            }
        }
    }
    if lit_start < b.len() {
        pieces.push(Piece::Lit(seg[lit_start..].into()));
    }
    Ok(match pieces.as_slice() {
        [] => Segment::Lit("".into()),
        [Piece::Var] => Segment::Var,
        [Piece::Lit(l)] => Segment::Lit(l.clone()),
        _ => Segment::Mixed(pieces.into_boxed_slice()),
    })
}

/// The selectors of one token claim (`publish` or `subscribe`), parsed
/// once when the token is verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    patterns: Box<[Pattern]>,
    /// One of them is `*`: every question is answered without a scan.
    any: bool,
}

impl Selectors {
    pub fn new(patterns: Vec<Pattern>) -> Selectors {
        let any = patterns.iter().any(|p| p.kind() == PatternKind::Any);
        Selectors {
            patterns: patterns.into_boxed_slice(),
            any,
        }
    }

    /// No selector: covers nothing (a token without the claim).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn as_slice(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether one of the selectors matches `topic`.
    pub fn covers(&self, topic: &str) -> bool {
        self.any || covers(&self.patterns, topic)
    }

    /// Whether one of the selectors covers every topic of `pattern` (see
    /// [`Pattern::covers_pattern`]); for an exact pattern, same as `covers`.
    pub fn covers_pattern(&self, pattern: &Pattern) -> bool {
        self.any || self.patterns.iter().any(|s| s.covers_pattern(pattern))
    }
}

/// Whether one of `selectors` matches `topic`.
pub fn covers(selectors: &[Pattern], topic: &str) -> bool {
    selectors.iter().any(|s| s.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text, &PatternLimits::default()).expect(text)
    }

    fn err(text: &str) -> PatternError {
        Pattern::parse(text, &PatternLimits::default()).expect_err(text)
    }

    #[test]
    fn kinds() {
        assert_eq!(p("orders/42").kind(), PatternKind::Exact);
        assert_eq!(p("https://example.com/a").kind(), PatternKind::Exact);
        assert_eq!(p("*").kind(), PatternKind::Any);
        assert_eq!(p("orders/42/*").kind(), PatternKind::Prefix);
        assert_eq!(p("books/{id}").kind(), PatternKind::Template);
        assert_eq!(p("users/{id}/*").kind(), PatternKind::Template);
        assert_eq!(p("books/{id}.json").kind(), PatternKind::Template);
        assert!(p("a/b").is_exact());
        assert!(!p("a/*").is_exact());
    }

    #[test]
    fn exact_and_any() {
        assert!(p("orders/42").matches("orders/42"));
        assert!(!p("orders/42").matches("orders/421"));
        assert!(!p("orders/42").matches("orders/42/"));
        assert!(!p("orders/42").matches("orders"));
        for t in ["a", "a/b", "https://x.y/z", "/"] {
            assert!(p("*").matches(t), "{t}");
        }
    }

    #[test]
    fn prefixes() {
        let o = p("orders/42/*");
        for t in ["orders/42/x", "orders/42/x/y", "orders/42//", "orders/42/-"] {
            assert!(o.matches(t), "{t}");
        }
        for t in [
            "orders/42",
            "orders/42/",
            "orders/421/x",
            "orders/4",
            "x/orders/42/a",
        ] {
            assert!(!o.matches(t), "{t}");
        }
        assert!(p("/*").matches("/a"));
        assert!(!p("/*").matches("/"));
    }

    #[test]
    fn templates() {
        let b = p("https://example.com/books/{id}");
        assert!(b.matches("https://example.com/books/1"));
        assert!(b.matches("https://example.com/books/abc-9"));
        assert!(!b.matches("https://example.com/books/"));
        assert!(!b.matches("https://example.com/books/1/reviews"));
        assert!(!b.matches("https://example.com/books"));
        assert!(!b.matches("http://example.com/books/1"));

        let j = p("books/{id}.json");
        assert!(j.matches("books/1.json"));
        assert!(j.matches("books/a.b.json"));
        assert!(!j.matches("books/.json"));
        assert!(!j.matches("books/1.jso"));
        assert!(!j.matches("books/1.json/x"));

        let m = p("v{major}.{minor}");
        assert!(m.matches("v1.2"));
        assert!(m.matches("v1.2.3"), "the second variable takes '2.3'");
        assert!(!m.matches("v.2"));
        assert!(!m.matches("v1."));
        assert!(!m.matches("v12"));

        let u = p("users/{id}/*");
        assert!(u.matches("users/7/feed"));
        assert!(u.matches("users/7/a/b"));
        assert!(!u.matches("users/7"));
        assert!(!u.matches("users/7/"));
        assert!(!u.matches("users//feed"));

        // The same literal before and after a variable.
        let aa = p("a{x}a");
        assert!(aa.matches("aba"));
        assert!(aa.matches("aaa"));
        assert!(!aa.matches("aa"));
        let mid = p("{x}-{y}");
        assert!(mid.matches("a-b"));
        assert!(mid.matches("a-b-c"));
        assert!(!mid.matches("-b"));
        assert!(!mid.matches("a-"));
        assert!(!mid.matches("ab"));
    }

    #[test]
    fn refusals_say_what() {
        assert_eq!(err(""), PatternError::Empty);
        assert!(matches!(
            Pattern::parse(
                &"a".repeat(600),
                &PatternLimits {
                    bytes_max: 512,
                    vars_max: 4
                }
            ),
            Err(PatternError::TooLong {
                len_bytes: 600,
                max_bytes: 512
            })
        ));
        assert_eq!(err("a*"), PatternError::MisplacedStar { at: 1 });
        assert_eq!(err("*/a"), PatternError::MisplacedStar { at: 0 });
        assert_eq!(err("a/*/b"), PatternError::MisplacedStar { at: 2 });
        assert_eq!(err("a/**"), PatternError::MisplacedStar { at: 2 });
        assert_eq!(err("a/{id"), PatternError::UnclosedVariable { at: 2 });
        assert_eq!(err("a/id}"), PatternError::StrayBrace { at: 4 });
        assert_eq!(err("a/{}"), PatternError::EmptyVariable { at: 2 });
        for bad in ["{+path}", "{?q}", "{id:3}", "{list*}", "{a,b}", "{.x}"] {
            assert_eq!(
                err(bad),
                PatternError::UnsupportedExpression { at: 0 },
                "{bad}"
            );
        }
        assert_eq!(err("{a}{b}"), PatternError::AdjacentVariables { at: 3 });
        assert_eq!(err("a b"), PatternError::BadChar { ch: ' ', at: 1 });
        assert_eq!(err("a/é"), PatternError::BadChar { ch: 'é', at: 2 });
        let many = (0..17).map(|i| format!("{{v{i}}}")).collect::<Vec<_>>();
        assert_eq!(
            err(&many.join("/")),
            PatternError::TooManyVariables { max: 16 }
        );
        // Every refusal reads as a sentence naming the fix.
        assert!(err("a*").to_string().contains("last segment"));
    }

    #[test]
    fn names_do_not_matter() {
        assert_eq!(p("books/{id}"), p("books/{x}"));
        assert_ne!(p("books/{id}"), p("books/{id}/*"));
    }

    #[test]
    fn selectors_cover_patterns() {
        let yes = [
            ("*", "orders/*"),
            ("*", "a/{b}"),
            ("orders/*", "orders/42/*"),
            ("orders/*", "orders/{id}"),
            ("orders/*", "orders/{id}/items"),
            ("orders/42/*", "orders/42/*"),
            ("books/{id}", "books/{x}"),
            ("books/{id}", "books/1"),
            ("books/{id}", "books/{id}.json"),
            ("users/{id}/*", "users/{id}/feed/*"),
            ("users/{id}/*", "users/7/feed"),
            ("a{x}", "a{y}"),
        ];
        for (s, o) in yes {
            assert!(p(s).covers_pattern(&p(o)), "{s} covers {o}");
        }
        let no = [
            ("orders/42", "orders/*"),
            ("orders/1/*", "orders/*"),
            ("orders/*", "orders/"),
            ("books/{id}", "books/*"),
            ("books/{id}", "books/{id}/x"),
            ("books/{id}.json", "books/{id}"),
            ("a/{x}", "{x}/{y}"),
            ("users/{id}/*", "users/{id}/"),
        ];
        for (s, o) in no {
            assert!(!p(s).covers_pattern(&p(o)), "{s} does not cover {o}");
        }
        let sel = Selectors::new(vec![p("orders/42/*"), p("news")]);
        assert!(sel.covers("news"));
        assert!(sel.covers("orders/42/1"));
        assert!(!sel.covers("orders/43/1"));
        assert!(Selectors::default().is_empty());
        assert!(!Selectors::default().covers("news"));
        assert!(Selectors::new(vec![p("*")]).covers("anything"));
    }

    /// A segment alphabet small enough that patterns and topics collide.
    fn seg_text() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["", "a", "b", "ab", "ba", "aa", "a.b"]).prop_map(str::to_owned)
    }

    fn pattern_seg() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "", "a", "b", "ab", "{x}", "a{x}", "{x}b", "a{x}b", "{x}.{y}", "{x}a{y}",
        ])
        .prop_map(str::to_owned)
    }

    /// A reference matcher written differently: a regular expression built
    /// by hand as a recursive backtracking search over the whole topic.
    fn reference(pattern: &str, topic: &str) -> bool {
        fn go(p: &[u8], t: &[u8]) -> bool {
            match p.first() {
                None => t.is_empty(),
                Some(b'*') => !t.is_empty(),
                Some(b'{') => {
                    let close = p.iter().position(|&c| c == b'}').unwrap_or(p.len() - 1);
                    (1..=t.len())
                        .take_while(|&n| t[n - 1] != b'/')
                        .any(|n| go(&p[close + 1..], &t[n..]))
                }
                Some(&c) => t.first() == Some(&c) && go(&p[1..], &t[1..]),
            }
        }
        go(pattern.as_bytes(), topic.as_bytes())
    }

    proptest! {
        /// Whatever a token issuer or a client sends: a pattern or a clear
        /// error, never a panic; a pattern matches what its text says.
        #[test]
        fn any_text_parses_or_is_refused(text in "[a-z{}*/.:é +?#-]{0,40}", topic in "[a-z/.]{1,20}") {
            if let Ok(pat) = Pattern::parse(&text, &PatternLimits::default()) {
                prop_assert_eq!(pat.matches(&topic), reference(&text, &topic));
            }
        }

        #[test]
        fn matching_agrees_with_a_backtracking_reference(
            segs in prop::collection::vec(pattern_seg(), 0..4),
            tail in any::<bool>(),
            topic in prop::collection::vec(seg_text(), 1..5),
        ) {
            let mut text = segs.join("/");
            if tail {
                text = if text.is_empty() { "*".into() } else { format!("{text}/*") };
            }
            prop_assume!(!text.is_empty());
            let topic = topic.join("/");
            prop_assume!(!topic.is_empty());
            let pat = p(&text);
            prop_assert_eq!(pat.matches(&topic), reference(&text, &topic), "{} vs {}", text, topic);
        }

        #[test]
        fn covers_pattern_is_sound(
            s in prop::collection::vec(pattern_seg(), 0..3),
            s_tail in any::<bool>(),
            o in prop::collection::vec(pattern_seg(), 0..3),
            o_tail in any::<bool>(),
            topics in prop::collection::vec(prop::collection::vec(seg_text(), 1..5), 1..40),
        ) {
            let build = |segs: &Vec<String>, tail: bool| {
                let t = segs.join("/");
                if tail { if t.is_empty() { "*".to_string() } else { format!("{t}/*") } } else { t }
            };
            let (st, ot) = (build(&s, s_tail), build(&o, o_tail));
            prop_assume!(!st.is_empty() && !ot.is_empty());
            let (sp, op) = (p(&st), p(&ot));
            if sp.covers_pattern(&op) {
                for t in topics {
                    let t = t.join("/");
                    if !t.is_empty() && op.matches(&t) {
                        prop_assert!(sp.matches(&t), "{} claims to cover {} but misses {}", st, ot, t);
                    }
                }
            }
        }
    }
}
