//! Label selectors in the subset of Calico's syntax that Gingham resources accept:
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | primary
//! primary := "(" expr ")" | "all()" | "has(" key ")"
//!          | key ( "==" | "!=" ) value
//!          | key ( "in" | "not in" ) "{" value ( "," value )* "}"
//! value   := 'text' | "text"
//! key     := [A-Za-z0-9_.\-/]+
//! ```
//!
//! As in Calico, `k != 'v'` and `k not in {...}` hold when the label is absent.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    All,
    Has(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Not(Box<Selector>),
    And(Box<Selector>, Box<Selector>),
    Or(Box<Selector>, Box<Selector>),
}

/// Why a selector did not parse, and where (a character offset into the text).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("selector {input:?}: {reason} at offset {offset}")]
pub struct SelectorError {
    pub input: String,
    pub offset: usize,
    pub reason: &'static str,
}

impl Selector {
    /// Whether a set of labels satisfies the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::All => true,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Equals(k, v) => labels.get(k) == Some(v),
            Selector::NotEquals(k, v) => labels.get(k) != Some(v),
            Selector::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Selector::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Selector::Not(s) => !s.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser { input: s, chars: s.char_indices().collect(), pos: 0 };
        let sel = p.or()?;
        p.skip_ws();
        if p.pos < p.chars.len() {
            return Err(p.error("unexpected text after the selector"));
        }
        Ok(sel)
    }
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

impl Parser<'_> {
    fn offset(&self) -> usize {
        self.chars.get(self.pos).map_or(self.input.len(), |(o, _)| *o)
    }

    fn error(&self, reason: &'static str) -> SelectorError {
        SelectorError { input: self.input.to_owned(), offset: self.offset(), reason }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|(_, c)| *c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes `token` (after whitespace) when it is next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        let rest: String = self.chars[self.pos..].iter().take(token.chars().count()).map(|(_, c)| *c).collect();
        if rest == token {
            self.pos += token.chars().count();
            true
        } else {
            false
        }
    }

    /// Consumes a keyword only when no key character follows (`in` but not `index`).
    fn eat_word(&mut self, word: &str) -> bool {
        let save = self.pos;
        if self.eat(word) && !self.peek().is_some_and(is_key_char) {
            return true;
        }
        self.pos = save;
        false
    }

    fn or(&mut self) -> Result<Selector, SelectorError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Selector::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Selector, SelectorError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Selector::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Selector, SelectorError> {
        if self.eat("!") {
            return Ok(Selector::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Selector, SelectorError> {
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.error("missing ')'"));
            }
            return Ok(inner);
        }
        if self.eat("all()") {
            return Ok(Selector::All);
        }
        let save = self.pos;
        if self.eat_word("has") && self.eat("(") {
            let key = self.key()?;
            if !self.eat(")") {
                return Err(self.error("missing ')' after has(key"));
            }
            return Ok(Selector::Has(key));
        }
        self.pos = save;
        let key = self.key()?;
        if self.eat("==") {
            return Ok(Selector::Equals(key, self.value()?));
        }
        if self.eat("!=") {
            return Ok(Selector::NotEquals(key, self.value()?));
        }
        if self.eat_word("in") {
            return Ok(Selector::In(key, self.set()?));
        }
        if self.eat_word("not") {
            if !self.eat_word("in") {
                return Err(self.error("expected 'in' after 'not'"));
            }
            return Ok(Selector::NotIn(key, self.set()?));
        }
        Err(self.error("expected ==, !=, in or not in after the label key"))
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(is_key_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("expected a label key"));
        }
        Ok(self.chars[start..self.pos].iter().map(|(_, c)| *c).collect())
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let Some(quote) = self.peek().filter(|c| *c == '\'' || *c == '"') else {
            return Err(self.error("expected a quoted value"));
        };
        self.pos += 1;
        let start = self.pos;
        while self.peek().is_some_and(|c| c != quote) {
            self.pos += 1;
        }
        if self.peek().is_none() {
            return Err(self.error("unterminated quoted value"));
        }
        let v = self.chars[start..self.pos].iter().map(|(_, c)| *c).collect();
        self.pos += 1;
        Ok(v)
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        if !self.eat("{") {
            return Err(self.error("expected '{' to open the value set"));
        }
        let mut values = vec![self.value()?];
        while self.eat(",") {
            values.push(self.value()?);
        }
        if !self.eat("}") {
            return Err(self.error("expected '}' to close the value set"));
        }
        Ok(values)
    }
}

fn quote(v: &str) -> String {
    // A value holding a single quote can only have been written in double quotes.
    if v.contains('\'') {
        format!("\"{v}\"")
    } else {
        format!("'{v}'")
    }
}

impl fmt::Display for Selector {
    /// The canonical text: fully parenthesised compound expressions, single quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |vs: &[String]| vs.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ");
        match self {
            Selector::All => f.write_str("all()"),
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Equals(k, v) => write!(f, "{k} == {}", quote(v)),
            Selector::NotEquals(k, v) => write!(f, "{k} != {}", quote(v)),
            Selector::In(k, vs) => write!(f, "{k} in {{{}}}", set(vs)),
            Selector::NotIn(k, vs) => write!(f, "{k} not in {{{}}}", set(vs)),
            Selector::Not(s) => write!(f, "!({s})"),
            Selector::And(a, b) => write!(f, "({a} && {b})"),
            Selector::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sel(s: &str) -> Selector {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_form_matches_as_calico_does() {
        let node = labels(&[("rack", "r1"), ("kubernetes.io/hostname", "node-1"), ("route-reflector", "true")]);
        let cases = [
            ("all()", true),
            ("has(rack)", true),
            ("!has(zone)", true),
            ("rack == 'r1'", true),
            ("rack == \"r2\"", false),
            ("rack != 'r2'", true),
            ("zone != 'a'", true),
            ("rack in {'r1', 'r2'}", true),
            ("rack in {'r3'}", false),
            ("zone not in {'a'}", true),
            ("rack not in {'r1'}", false),
            ("kubernetes.io/hostname == 'node-1' && route-reflector == 'true'", true),
            ("rack == 'r9' || has(route-reflector)", true),
            ("!(rack == 'r1' && has(zone))", true),
            ("has(rack) && !has(zone) || zone == 'x'", true),
        ];
        for (text, want) in cases {
            assert_eq!(sel(text).matches(&node), want, "{text}");
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(sel("has(a) || has(b) && has(c)"), sel("has(a) || (has(b) && has(c))"));
    }

    #[test]
    fn errors_say_where_and_why() {
        for (text, reason) in [
            ("rack = 'r1'", "expected ==, !=, in or not in after the label key"),
            ("rack == r1", "expected a quoted value"),
            ("rack == 'r1", "unterminated quoted value"),
            ("(has(a)", "missing ')'"),
            ("rack in 'r1'", "expected '{' to open the value set"),
            ("has(a) has(b)", "unexpected text after the selector"),
            ("", "expected a label key"),
            ("rack not 'x'", "expected 'in' after 'not'"),
        ] {
            let e = text.parse::<Selector>().unwrap_err();
            assert_eq!(e.reason, reason, "{text}");
            assert!(e.offset <= text.len());
        }
    }

    #[test]
    fn keywords_are_not_prefixes_of_keys() {
        assert_eq!(sel("index == 'x'"), Selector::Equals("index".into(), "x".into()));
        assert_eq!(sel("hasher == 'x'"), Selector::Equals("hasher".into(), "x".into()));
    }
}
