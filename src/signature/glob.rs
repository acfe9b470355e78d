//! Path globs for the policy's `images` and `urls`: `*` stays within one `/`-separated segment, a `**` segment
//! spans any number of segments (none included).

/// A validated glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Glob {
    source: String,
    segments: Vec<Segment>,
    /// How many leading segments compare case-insensitively (the registry; a URL's scheme and host).
    folded: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// `**`: zero or more whole segments.
    Any,
    /// A segment where `*` matches any run of characters other than `/`.
    Pattern(String),
}

impl Glob {
    /// `folded`: the number of leading segments matched case-insensitively.
    pub(crate) fn new(source: &str, folded: usize) -> Glob {
        let segments = source
            .split('/')
            .map(|s| {
                if s == "**" {
                    Segment::Any
                } else {
                    Segment::Pattern(s.to_string())
                }
            })
            .collect();
        Glob {
            source: source.to_string(),
            segments,
            folded,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    pub(crate) fn matches(&self, target: &str) -> bool {
        let parts: Vec<&str> = target.split('/').collect();
        self.match_from(0, &parts, 0)
    }

    fn match_from(&self, si: usize, parts: &[&str], pi: usize) -> bool {
        let Some(segment) = self.segments.get(si) else {
            return pi == parts.len();
        };
        match segment {
            // Collapse runs of `**` and try every split; patterns are short, so the recursion is cheap.
            Segment::Any => (pi..=parts.len()).any(|next| self.match_from(si + 1, parts, next)),
            Segment::Pattern(p) => {
                let Some(part) = parts.get(pi) else { return false };
                let ok = if pi < self.folded {
                    wildcard(p.to_ascii_lowercase().as_bytes(), part.to_ascii_lowercase().as_bytes())
                } else {
                    wildcard(p.as_bytes(), part.as_bytes())
                };
                ok && self.match_from(si + 1, parts, pi + 1)
            }
        }
    }
}

/// `*` matches any run of bytes (the caller has split on `/` already); everything else matches itself.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    // The classic greedy matcher with one backtrack point: linear in practice, no recursion.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}
