//! Logstash's conditions (`[level] == "ERROR" and [status] in [500, 503]`), for a filter's
//! `if`: parsed once at configuration time into a tree, evaluated per event reading only
//! the fields the condition names (a `message` nobody names is never decoded).
//!
//! Grammar: logstash-core `lscl_grammar.treetop` (rules `condition` to `selector`);
//! semantics: `lscl.rb` (operator precedence) and `EventCondition.java` (each operator's
//! type rules). The rules, with the places they come from, are listed in the README
//! ("Conditions"); where a rule is Logstash's on purpose though odd, the comment says so.

use std::cmp::Ordering;
use std::fmt;

use bumpalo::Bump;
use regex::Regex;

use super::doc::Doc;
use super::path::FieldPath;
use super::value::{Kind, Value};

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `[field]`: exists and is truthy (`FieldTruthy`).
    Truthy(FieldPath),
    /// A literal as the whole condition: its truthiness, fixed at configuration time.
    Literal(Literal),
    Not(Box<Node>),
    Bool(BoolOp, Box<Node>, Box<Node>),
    Compare(CmpOp, Operand, Operand),
    Match {
        field: FieldPath,
        regex: Pattern,
        negated: bool,
    },
    In {
        item: Operand,
        set: Operand,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
    Nand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Field(FieldPath),
    Literal(Literal),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string's text between its quotes, taken as written: Logstash processes no
    /// escapes unless `config.support_escapes` is set (default false).
    Str(Box<str>),
    Int(i64),
    Float(f64),
    List(Vec<Literal>),
}

/// A regular expression, compiled once; equal when the source is.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: Box<str>,
    regex: Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Pattern {
    /// Ruby's defaults: `^` and `$` match at line boundaries (Ruby has no other mode),
    /// `.` does not match a newline.
    pub fn new(source: &str) -> Result<Pattern, String> {
        let regex = regex::RegexBuilder::new(source)
            .multi_line(true)
            .build()
            .map_err(|e| {
                let text = e.to_string();
                let last = text.lines().last().unwrap_or(&text).trim().to_string();
                format!("regular expression /{source}/: {last}")
            })?;
        Ok(Pattern {
            source: source.into(),
            regex,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// A condition that could not be evaluated on an event: Logstash raises here (8.16 and
/// later log the event and drop it), lumberd skips the filter and tags the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError(pub &'static str);

/// A syntax or type error, at a byte offset of the condition text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

impl ParseError {
    /// The 1-based column (in characters) of the error in `text`.
    pub fn column(&self, text: &str) -> usize {
        text[..self.offset.min(text.len())].chars().count() + 1
    }
}

impl Condition {
    /// Parses a whole condition.
    pub fn parse(text: &str) -> Result<Condition, ParseError> {
        let (c, used) = Condition::parse_prefix(text)?;
        let mut p = Parser { text, at: used };
        p.skip_cs();
        if p.at < text.len() {
            return Err(p.error("unexpected text after the condition"));
        }
        Ok(c)
    }

    /// Parses a condition at the start of `text` (a Logstash `if` up to its `{`): the
    /// condition and the bytes it took.
    pub fn parse_prefix(text: &str) -> Result<(Condition, usize), ParseError> {
        let mut p = Parser { text, at: 0 };
        p.skip_cs();
        let root = p.condition(true)?;
        Ok((Condition { root }, p.at))
    }

    /// A condition built from a tree (the importer composes branch conditions).
    pub fn from_node(root: Node) -> Condition {
        Condition { root }
    }

    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The fields the condition reads.
    pub fn fields(&self) -> Vec<&FieldPath> {
        let mut out = Vec::new();
        self.root.fields(&mut out);
        out
    }

    /// True when the event fulfils the condition.
    pub fn eval(&self, doc: &mut Doc) -> Result<bool, EvalError> {
        self.root.eval(doc)
    }
}

impl Node {
    fn fields<'s>(&'s self, out: &mut Vec<&'s FieldPath>) {
        let operand = |o: &'s Operand, out: &mut Vec<&'s FieldPath>| {
            if let Operand::Field(f) = o {
                out.push(f);
            }
        };
        match self {
            Node::Truthy(f) | Node::Match { field: f, .. } => out.push(f),
            Node::Literal(_) => {}
            Node::Not(n) => n.fields(out),
            Node::Bool(_, l, r) => {
                l.fields(out);
                r.fields(out);
            }
            Node::Compare(_, l, r)
            | Node::In {
                item: l, set: r, ..
            } => {
                operand(l, out);
                operand(r, out);
            }
        }
    }

    fn eval(&self, doc: &mut Doc) -> Result<bool, EvalError> {
        Ok(match self {
            Node::Truthy(f) => truthy(&read(doc, f)),
            Node::Literal(l) => truthy(&l.view()),
            Node::Not(n) => !n.eval(doc)?,
            // Both operands of xor are evaluated (DSL.eXor: (!a and b) or (a and !b)).
            Node::Bool(op, l, r) => match op {
                BoolOp::And => l.eval(doc)? && r.eval(doc)?,
                BoolOp::Or => l.eval(doc)? || r.eval(doc)?,
                BoolOp::Nand => !(l.eval(doc)? && r.eval(doc)?),
                BoolOp::Xor => l.eval(doc)? != r.eval(doc)?,
            },
            Node::Compare(op, l, r) => compare(doc, *op, l, r)?,
            Node::Match {
                field,
                regex,
                negated,
            } => {
                let hit = match read(doc, field) {
                    V::Str(s) => regex.regex.is_match(s),
                    _ => false,
                };
                hit != *negated
            }
            Node::In { item, set, negated } => contains(doc, item, set)? != *negated,
        })
    }
}

/// A value as the conditions see it: Logstash's Ruby types for JSON.
#[derive(Debug, Clone)]
enum V<'a> {
    /// A missing field or JSON null: both are Java `null` to `EventCondition`.
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    List(Vec<V<'a>>),
    Map(Vec<(&'a str, V<'a>)>),
}

fn read<'a>(doc: &mut Doc<'a>, path: &FieldPath) -> V<'a> {
    let bump = doc.bump;
    match doc.get(path) {
        Some(v) => view(v, bump),
        None => V::Null,
    }
}

/// Converts what the condition reads; strings stay borrowed (a `Raw` string is decoded,
/// not replaced, so the document is written as it came).
fn view<'a>(v: &mut Value<'a>, bump: &'a Bump) -> V<'a> {
    match v.kind() {
        Kind::Null => V::Null,
        Kind::Bool => V::Bool(!v.is_false()),
        Kind::Number => number(v.number_text().unwrap_or("0")),
        Kind::String => match v {
            Value::Timestamp(t) => {
                let mut out = Vec::with_capacity(24);
                super::value::write_timestamp(t, &mut out);
                V::Str(bump.alloc_str(std::str::from_utf8(&out).unwrap_or_default()))
            }
            other => V::Str(other.as_str(bump).unwrap_or_default()),
        },
        Kind::Array => {
            v.expand(bump);
            match v {
                Value::Array(items) => V::List(items.iter_mut().map(|i| view(i, bump)).collect()),
                _ => V::Null,
            }
        }
        Kind::Object => {
            v.expand(bump);
            match v {
                Value::Object(o) => V::Map(
                    o.fields
                        .iter_mut()
                        .map(|(k, v)| (*k, view(v, bump)))
                        .collect(),
                ),
                _ => V::Null,
            }
        }
    }
}

/// A JSON number as Logstash holds it: an Integer when it has no fraction or exponent
/// (Java Long, Ruby Fixnum), a Float otherwise.
fn number(text: &str) -> V<'static> {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(i) = text.parse() {
            return V::Int(i);
        }
    }
    V::Float(text.parse().unwrap_or(f64::NAN))
}

impl Literal {
    fn view(&self) -> V<'_> {
        match self {
            Literal::Str(s) => V::Str(s),
            Literal::Int(i) => V::Int(*i),
            Literal::Float(f) => V::Float(*f),
            Literal::List(items) => V::List(items.iter().map(Literal::view).collect()),
        }
    }
}

/// `FieldTruthy`/`valueIsTruthy`: null is false, and so is anything whose `toString` is
/// empty or `"false"` (the boolean, and the string). `0`, `[]` and `{}` are true.
fn truthy(v: &V) -> bool {
    match v {
        V::Null => false,
        V::Bool(b) => *b,
        V::Str(s) => !s.is_empty() && *s != "false",
        _ => true,
    }
}

/// Java's `a.equals(b)` on Logstash's values. A Ruby Integer equals only an Integer
/// (JRuby's `RubyFixnum.equals`); other values compare with Ruby's `==`, under which a
/// Float equals an Integer of the same value, and arrays and hashes compare element by
/// element with `==`.
fn java_equals(a: &V, b: &V) -> bool {
    match (a, b) {
        (V::Int(x), V::Int(y)) => x == y,
        (V::Int(_), _) => false,
        _ => ruby_eq(a, b),
    }
}

fn ruby_eq(a: &V, b: &V) -> bool {
    match (a, b) {
        (V::Null, V::Null) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Str(x), V::Str(y)) => x == y,
        (V::Int(x), V::Int(y)) => x == y,
        (V::Int(x), V::Float(y)) | (V::Float(y), V::Int(x)) => (*x as f64) == *y,
        (V::Float(x), V::Float(y)) => x == y,
        (V::List(x), V::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| ruby_eq(a, b))
        }
        (V::Map(x), V::Map(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| {
                    y.iter()
                        .find(|(k2, _)| k2 == k)
                        .is_some_and(|(_, v2)| ruby_eq(v, v2))
                })
        }
        _ => false,
    }
}

/// `EventCondition.compare`: `left.compareTo(right)` with the field's value on the left.
/// Strings compare byte by byte with strings, numbers numerically with numbers; JRuby
/// raises for a string or number against anything else, and for null (a missing
/// field), an array or a hash (not `Comparable`). A boolean is a plain `RubyObject`,
/// whose `compareTo` answers 0 for what `<=>` cannot order.
fn order(left: &V, right: &V) -> Result<Ordering, EvalError> {
    let num = |v: &V| match v {
        V::Int(i) => Some(*i as f64),
        V::Float(f) => Some(*f),
        _ => None,
    };
    match (left, right) {
        (V::Null, _) => Err(EvalError(
            "an ordering comparison read a missing or null field",
        )),
        (V::List(_) | V::Map(_), _) => {
            Err(EvalError("an ordering comparison read an array or object"))
        }
        (V::Bool(_), _) => Ok(Ordering::Equal),
        (V::Str(a), V::Str(b)) => Ok(a.as_bytes().cmp(b.as_bytes())),
        (V::Int(a), V::Int(b)) => Ok(a.cmp(b)),
        (V::Int(_) | V::Float(_), V::Int(_) | V::Float(_)) => {
            Ok(num(left).unwrap().total_cmp(&num(right).unwrap()))
        }
        _ => Err(EvalError(
            "an ordering comparison of a string with a number or other type",
        )),
    }
}

fn compare(doc: &mut Doc, op: CmpOp, l: &Operand, r: &Operand) -> Result<bool, EvalError> {
    let (lv, rv) = (operand(doc, l), operand(doc, r));
    let (lv, rv) = (&lv, &rv);
    match op {
        // `rubyFieldEquals`: the literal is the receiver, whichever side it is written on.
        CmpOp::Eq | CmpOp::Ne => {
            let eq = match (l, r) {
                (Operand::Field(_), Operand::Literal(_)) => java_equals(rv, lv),
                _ => java_equals(lv, rv),
            };
            Ok(eq == (op == CmpOp::Eq))
        }
        _ => {
            // A literal on the left is compared from the field's side with the converse.
            let (field_side, other, op) = match (l, r) {
                (Operand::Literal(_), Operand::Field(_)) => (rv, lv, converse(op)),
                _ => (lv, rv, op),
            };
            let o = order(field_side, other)?;
            Ok(match op {
                CmpOp::Lt => o == Ordering::Less,
                CmpOp::Le => o != Ordering::Greater,
                CmpOp::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            })
        }
    }
}

fn converse(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    }
}

/// An operand's value; a literal is copied into the event's arena so both sides share
/// the arena's lifetime.
fn operand<'d>(doc: &mut Doc<'d>, o: &Operand) -> V<'d> {
    match o {
        Operand::Field(f) => read(doc, f),
        Operand::Literal(l) => owned(l, doc.bump),
    }
}

/// A literal in the event's arena, so it and a field's value share a lifetime.
fn owned<'d>(l: &Literal, bump: &'d Bump) -> V<'d> {
    match l {
        Literal::Str(s) => V::Str(bump.alloc_str(s)),
        Literal::Int(i) => V::Int(*i),
        Literal::Float(f) => V::Float(*f),
        Literal::List(items) => V::List(items.iter().map(|i| owned(i, bump)).collect()),
    }
}

/// Ruby/Java `toString` of a value, for `[field] in [list]` (`FieldInConstantList`
/// compares the two sides' strings).
fn to_s(v: &V, out: &mut String) {
    use std::fmt::Write as _;
    match v {
        V::Null => {}
        V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        V::Int(i) => {
            let _ = write!(out, "{i}");
        }
        V::Float(f) => out.push_str(&float_text(*f)),
        V::Str(s) => out.push_str(s),
        // Java's AbstractCollection / AbstractMap toString.
        V::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                to_s(item, out);
            }
            out.push(']');
        }
        V::Map(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push('=');
                to_s(v, out);
            }
            out.push('}');
        }
    }
}

/// A float as Ruby and Java write it in the ordinary range: `100.0`, `892.7`.
fn float_text(f: f64) -> String {
    let s = format!("{f}");
    if s.contains(['.', 'e', 'N', 'i']) {
        s
    } else {
        s + ".0"
    }
}

/// `EventCondition.in`, by the shapes of its two sides (checked at parse time).
fn contains(doc: &mut Doc, item: &Operand, set: &Operand) -> Result<bool, EvalError> {
    let bump = doc.bump;
    Ok(match (item, set) {
        // FieldInConstantScalar: the field is a string found inside the literal's text.
        (
            Operand::Field(f),
            Operand::Literal(lit @ (Literal::Str(_) | Literal::Int(_) | Literal::Float(_))),
        ) => {
            let mut text = String::new();
            to_s(&owned(lit, bump), &mut text);
            matches!(read(doc, f), V::Str(s) if text.contains(s))
        }
        // ConstantStringInField: a substring of a string field, or an element of a list.
        (Operand::Literal(Literal::Str(s)), Operand::Field(f)) => match read(doc, f) {
            V::Str(v) => v.contains(&**s),
            V::List(items) => items.iter().any(|i| matches!(i, V::Str(x) if *x == &**s)),
            _ => false,
        },
        // ConstantScalarInField: an element of a list field. (Logstash compares a
        // non-list field with the field reference itself: never equal.)
        (Operand::Literal(n @ (Literal::Int(_) | Literal::Float(_))), Operand::Field(f)) => {
            match read(doc, f) {
                V::List(items) => {
                    let n = owned(n, bump);
                    items.iter().any(|i| java_equals(&n, i))
                }
                _ => false,
            }
        }
        // FieldInConstantList: present, and its string equals an element's string.
        (Operand::Field(f), Operand::Literal(Literal::List(items))) => {
            let v = read(doc, f);
            if matches!(v, V::Null) {
                return Ok(false);
            }
            let mut found = String::new();
            to_s(&v, &mut found);
            let mut text = String::new();
            items.iter().any(|i| {
                text.clear();
                to_s(&owned(i, bump), &mut text);
                text == found
            })
        }
        // FieldInField.
        (Operand::Field(a), Operand::Field(b)) => {
            let (l, r) = (read(doc, a), read(doc, b));
            match (&l, &r) {
                (V::List(_) | V::Map(_), _) => false,
                (V::Str(x), V::Str(y)) => y.contains(x),
                (V::Null, V::List(_)) => {
                    return Err(EvalError(
                        "`in` looked for a missing or null field in a list",
                    ))
                }
                (_, V::List(items)) => items.iter().any(|i| java_equals(&l, i)),
                (V::Null, _) => false,
                _ => java_equals(&l, &r),
            }
        }
        (Operand::Literal(a), Operand::Literal(b)) => constant_in(a, b),
        // Rejected by the parser.
        _ => false,
    })
}

/// `in` between two literals, folded as Logstash does at compile time.
fn constant_in(item: &Literal, set: &Literal) -> bool {
    let text = |l: &Literal| {
        let mut s = String::new();
        to_s(&l.view(), &mut s);
        s
    };
    match (item, set) {
        (Literal::Str(i), Literal::List(items)) => items.iter().any(|x| text(x) == **i),
        (Literal::Str(i), Literal::Str(s)) => s.contains(&**i),
        (Literal::List(items), Literal::Str(s)) => items.iter().any(|x| text(x) == **s),
        _ => literal_java_equals(set, item),
    }
}

/// `Object.equals` between two literals as Java holds them (String, Long, Double, List).
fn literal_java_equals(a: &Literal, b: &Literal) -> bool {
    match (a, b) {
        (Literal::Str(x), Literal::Str(y)) => x == y,
        (Literal::Int(x), Literal::Int(y)) => x == y,
        (Literal::Float(x), Literal::Float(y)) => x == y,
        (Literal::List(x), Literal::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| literal_java_equals(a, b))
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------
// Parsing: a recursive descent over `lscl_grammar.treetop`'s condition rules. The lexical
// helpers are shared with the configuration parser (`crate::logstash`).

/// The grammar's `cs`: the length of the whitespace and `#` comments `text` starts with.
pub fn cs_len(text: &str) -> usize {
    let mut at = 0;
    loop {
        let rest = &text[at..];
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        at += rest.len() - trimmed.len();
        if !trimmed.starts_with('#') {
            return at;
        }
        at += trimmed.find('\n').map_or(trimmed.len(), |n| n + 1);
    }
}

/// True when `text` starts with the word `w` not followed by an identifier character
/// (ASCII alphanumerics, `_`, and `extra`).
pub fn starts_with_word(text: &str, w: &str, extra: &[u8]) -> bool {
    text.starts_with(w)
        && !text[w.len()..]
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || extra.contains(&b))
}

/// `text` opens with delimiter `d`: the text up to the next `d` not preceded by a
/// backslash (`\d` stays in the text, escapes are not processed), and the bytes used.
pub fn delimited_len(text: &str, d: u8) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    let mut i = 1;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&d) {
            i += 2;
        } else if b[i] == d {
            return Some((&text[1..i], i + 1));
        } else {
            i += 1;
        }
    }
    None
}

struct Parser<'t> {
    text: &'t str,
    at: usize,
}

/// One element of a condition before operators are applied: an expression, and whether
/// it was a bare field reference or literal (those become truthiness tests, or are
/// refused, depending on where they stand).
enum Element {
    Node(Node),
    Field(FieldPath),
    Literal(Literal, usize),
    Regex(usize),
}

enum Rvalue {
    Field(FieldPath),
    Literal(Literal),
    Regex(Pattern),
}

impl<'t> Parser<'t> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        self.error_at(self.at, message)
    }

    fn error_at(&self, offset: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            offset,
            message: message.into(),
        }
    }

    fn rest(&self) -> &'t str {
        &self.text[self.at..]
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.at += s.len();
            true
        } else {
            false
        }
    }

    /// `cs`: whitespace and `#` comments.
    fn skip_cs(&mut self) {
        self.at += cs_len(self.rest());
    }

    /// A word operator: the word, not the start of a longer identifier.
    fn eat_word(&mut self, w: &str) -> bool {
        let found = starts_with_word(self.rest(), w, b"");
        if found {
            self.at += w.len();
        }
        found
    }

    /// `condition: expression (cs boolean_operator cs expression)*`, combined as
    /// `lscl.rb`'s `join_conditions` does: a shunting yard where `and` (2) binds
    /// tighter than `or` (1), which pops at most one operator per incoming operator
    /// (so `a and b and c or d` is `a and ((b and c) or d)`, as in Logstash), and where
    /// `xor` and `nand` have no precedence at all (Logstash refuses them next to any
    /// other operator of the same level).
    fn condition(&mut self, top: bool) -> Result<Node, ParseError> {
        let start = self.at;
        let mut elements = vec![self.expression()?];
        let mut ops: Vec<(BoolOp, usize)> = Vec::new();
        let mut out: Vec<Result<Element, (BoolOp, usize)>> = Vec::new();
        loop {
            let save = self.at;
            self.skip_cs();
            let at = self.at;
            let op = if self.eat_word("and") {
                BoolOp::And
            } else if self.eat_word("or") {
                BoolOp::Or
            } else if self.eat_word("xor") {
                BoolOp::Xor
            } else if self.eat_word("nand") {
                BoolOp::Nand
            } else {
                self.at = save;
                break;
            };
            out.push(Ok(elements.pop().expect("an element before each operator")));
            if let Some(&(last, last_at)) = ops.last() {
                let prec = |op: BoolOp, at: usize| match op {
                    BoolOp::And => Ok(2),
                    BoolOp::Or => Ok(1),
                    _ => Err(self.error_at(
                        at,
                        "xor and nand cannot stand next to another boolean operator without \
                         parentheses (Logstash rejects this: it gives them no precedence)",
                    )),
                };
                if prec(last, last_at)? > prec(op, at)? {
                    out.push(Err(ops.pop().expect("checked")));
                }
            }
            ops.push((op, at));
            self.skip_cs();
            elements.push(self.expression()?);
        }
        out.push(Ok(elements.pop().expect("the last element")));
        if ops.is_empty() {
            let Ok(only) = out.pop().expect("one element") else {
                unreachable!("an operator without operands")
            };
            return match only {
                Element::Node(n) => Ok(n),
                Element::Field(f) => Ok(Node::Truthy(f)),
                Element::Literal(l, at) if top => {
                    let _ = at;
                    Ok(Node::Literal(l))
                }
                Element::Literal(_, at) => Err(self.error_at(
                    at,
                    "a literal is not a condition here (Logstash accepts one only as the whole \
                     condition)",
                )),
                Element::Regex(at) => {
                    Err(self.error_at(at, "a regular expression needs `=~` or `!~`"))
                }
            };
        }
        while let Some(op) = ops.pop() {
            out.push(Err(op));
        }
        let mut stack: Vec<Node> = Vec::new();
        for item in out {
            match item {
                Ok(e) => stack.push(self.boolean_operand(e)?),
                Err((op, at)) => {
                    let (Some(r), Some(l)) = (stack.pop(), stack.pop()) else {
                        return Err(self.error_at(at, "operator without an operand"));
                    };
                    stack.push(Node::Bool(op, Box::new(l), Box::new(r)));
                }
            }
        }
        match (stack.pop(), stack.is_empty()) {
            (Some(n), true) => Ok(n),
            _ => Err(self.error_at(start, "malformed condition")),
        }
    }

    /// An operand of and/or/xor/nand: a field stands for its truthiness (`booleanPair`);
    /// a literal or regex is refused (`UnexpectedTypeException`).
    fn boolean_operand(&self, e: Element) -> Result<Node, ParseError> {
        match e {
            Element::Node(n) => Ok(n),
            Element::Field(f) => Ok(Node::Truthy(f)),
            Element::Literal(_, at) | Element::Regex(at) => Err(self.error_at(
                at,
                "a literal cannot be an operand of and/or/xor/nand (Logstash rejects it)",
            )),
        }
    }

    /// `expression`: `( condition )`, `!`, `in`, `not in`, a comparison, a regex match,
    /// or a lone rvalue.
    fn expression(&mut self) -> Result<Element, ParseError> {
        let start = self.at;
        if self.eat("(") {
            self.skip_cs();
            let inner = self.condition(false)?;
            self.skip_cs();
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return Ok(Element::Node(inner));
        }
        if self.peek() == Some(b'!')
            && !self.rest().starts_with("!=")
            && !self.rest().starts_with("!~")
        {
            self.at += 1;
            self.skip_cs();
            if self.eat("(") {
                self.skip_cs();
                let inner = self.condition(false)?;
                self.skip_cs();
                if !self.eat(")") {
                    return Err(self.error("expected `)`"));
                }
                return Ok(Element::Node(Node::Not(Box::new(inner))));
            }
            if self.peek() == Some(b'[') {
                let at = self.at;
                match self.rvalue()? {
                    Rvalue::Field(f) => {
                        return Ok(Element::Node(Node::Not(Box::new(Node::Truthy(f)))))
                    }
                    _ => {
                        return Err(self.error_at(
                            at,
                            "`!` takes a field reference or a parenthesised condition",
                        ))
                    }
                }
            }
            return Err(self.error("`!` takes a field reference or a parenthesised condition"));
        }
        let left = self.rvalue()?;
        let save = self.at;
        self.skip_cs();
        let op_at = self.at;
        if self.eat_word("in") {
            self.skip_cs();
            let right_at = self.at;
            let right = self.rvalue()?;
            return self.in_expression(left, right, false, start, right_at);
        }
        if self.eat_word("not") && self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.skip_cs();
            if self.eat_word("in") {
                self.skip_cs();
                let right_at = self.at;
                let right = self.rvalue()?;
                return self.in_expression(left, right, true, start, right_at);
            }
            return Err(self.error("expected `in` after `not`"));
        }
        for (tok, negated) in [("=~", false), ("!~", true)] {
            if self.eat(tok) {
                self.skip_cs();
                let right_at = self.at;
                let pattern = match self.rvalue()? {
                    Rvalue::Regex(p) => p,
                    // lscl.rb: "Strings work as rvalues!": a string is the pattern.
                    Rvalue::Literal(Literal::Str(s)) => {
                        Pattern::new(&s).map_err(|e| self.error_at(right_at, e))?
                    }
                    _ => {
                        return Err(
                            self.error_at(right_at, "`=~` and `!~` take a /regex/ or a string")
                        )
                    }
                };
                let Rvalue::Field(field) = left else {
                    return Err(
                        self.error_at(start, "`=~` and `!~` need a field reference on the left")
                    );
                };
                return Ok(Element::Node(Node::Match {
                    field,
                    regex: pattern,
                    negated,
                }));
            }
        }
        for (tok, op) in [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ] {
            if self.eat(tok) {
                self.skip_cs();
                let right_at = self.at;
                let right = self.rvalue()?;
                return self.comparison(op, left, right, start, right_at);
            }
        }
        let _ = op_at;
        self.at = save;
        Ok(match left {
            Rvalue::Field(f) => Element::Field(f),
            Rvalue::Literal(l) => Element::Literal(l, start),
            Rvalue::Regex(_) => Element::Regex(start),
        })
    }

    fn comparison(
        &self,
        op: CmpOp,
        left: Rvalue,
        right: Rvalue,
        left_at: usize,
        right_at: usize,
    ) -> Result<Element, ParseError> {
        let operand = |r: Rvalue, at: usize| match r {
            Rvalue::Field(f) => Ok(Operand::Field(f)),
            Rvalue::Literal(l) => Ok(Operand::Literal(l)),
            Rvalue::Regex(_) => {
                Err(self.error_at(at, "a regular expression can only follow `=~` or `!~`"))
            }
        };
        let (l, r) = (operand(left, left_at)?, operand(right, right_at)?);
        if !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            for (o, at) in [(&l, left_at), (&r, right_at)] {
                if let Operand::Literal(Literal::List(_)) = o {
                    return Err(self.error_at(at, "a list cannot be ordered with < > <= >="));
                }
            }
            // compareConstants: Java's compareTo between two literals of different types
            // throws while Logstash compiles the pipeline.
            if let (Operand::Literal(a), Operand::Literal(b)) = (&l, &r) {
                let same = matches!(
                    (a, b),
                    (Literal::Str(_), Literal::Str(_))
                        | (Literal::Int(_), Literal::Int(_))
                        | (Literal::Float(_), Literal::Float(_))
                );
                if !same {
                    return Err(
                        self.error_at(left_at, "two literals of different types cannot be ordered")
                    );
                }
            }
        }
        Ok(Element::Node(Node::Compare(op, l, r)))
    }

    fn in_expression(
        &self,
        left: Rvalue,
        right: Rvalue,
        negated: bool,
        left_at: usize,
        right_at: usize,
    ) -> Result<Element, ParseError> {
        let ok = matches!(
            (&left, &right),
            (Rvalue::Field(_), Rvalue::Literal(_) | Rvalue::Field(_))
                | (
                    Rvalue::Literal(Literal::Str(_) | Literal::Int(_) | Literal::Float(_)),
                    Rvalue::Field(_),
                )
                | (Rvalue::Literal(_), Rvalue::Literal(_))
        );
        if !ok {
            let at = if matches!(left, Rvalue::Regex(_) | Rvalue::Literal(Literal::List(_))) {
                left_at
            } else {
                right_at
            };
            return Err(self.error_at(
                at,
                "`in` takes a field or a string or number on the left, and a field, a list, a \
                 string or a number on the right",
            ));
        }
        let to_operand = |r: Rvalue| match r {
            Rvalue::Field(f) => Operand::Field(f),
            Rvalue::Literal(l) => Operand::Literal(l),
            Rvalue::Regex(_) => unreachable!("checked above"),
        };
        Ok(Element::Node(Node::In {
            item: to_operand(left),
            set: to_operand(right),
            negated,
        }))
    }

    /// `rvalue: string / number / selector / array / method_call / regexp`, in that
    /// order: `[x]` is a field reference, `[x, y]` (a comma) or `[]` a list.
    fn rvalue(&mut self) -> Result<Rvalue, ParseError> {
        let start = self.at;
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => Ok(Rvalue::Literal(Literal::Str(self.quoted(q)?.into()))),
            Some(b'-' | b'0'..=b'9') => Ok(Rvalue::Literal(self.number()?)),
            Some(b'[') => {
                if let Some(f) = self.selector()? {
                    return Ok(Rvalue::Field(f));
                }
                Ok(Rvalue::Literal(self.list()?))
            }
            Some(b'/') => {
                let source = self.delimited(b'/')?;
                Pattern::new(source)
                    .map(Rvalue::Regex)
                    .map_err(|e| self.error_at(start, e))
            }
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => {
                let word = self.bareword();
                self.skip_cs();
                if self.peek() == Some(b'(') {
                    return Err(self.error_at(start, format!("`{word}(...)`: method calls are not supported (Logstash does not implement them either)")));
                }
                Err(self.error_at(
                    start,
                    format!("`{word}`: expected a field reference like `[{word}]`, a quoted string or a number"),
                ))
            }
            None => Err(self.error("unexpected end of the condition")),
            _ => Err(self.error("expected a field reference, a string, a number or a list")),
        }
    }

    fn bareword(&mut self) -> &'t str {
        let rest = self.rest();
        let n = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        self.at += n;
        &rest[..n]
    }

    /// A quoted string's text (`"a\"b"` is `a\"b`: escapes are not processed).
    fn quoted(&mut self, q: u8) -> Result<&'t str, ParseError> {
        self.delimited(q)
    }

    /// Text between two delimiters, where a backslash before the delimiter keeps it in.
    fn delimited(&mut self, d: u8) -> Result<&'t str, ParseError> {
        let Some((content, used)) = delimited_len(self.rest(), d) else {
            let what = if d == b'/' {
                "regular expression"
            } else {
                "string"
            };
            return Err(self.error(format!("unterminated {what}")));
        };
        self.at += used;
        Ok(content)
    }

    /// `number: "-"? [0-9]+ ("." [0-9]*)?`, an Integer or (with a `.`) a Float.
    fn number(&mut self) -> Result<Literal, ParseError> {
        let start = self.at;
        let rest = self.rest().as_bytes();
        let mut n = usize::from(rest.first() == Some(&b'-'));
        let digits = rest[n..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(self.error("expected a digit"));
        }
        n += digits;
        let mut float = false;
        if rest.get(n) == Some(&b'.') {
            float = true;
            n += 1;
            let frac = rest[n..].iter().take_while(|b| b.is_ascii_digit()).count();
            if frac == 0 {
                // Ruby's Float("1.") raises while Logstash compiles the condition.
                return Err(self.error_at(start, "a number needs digits after its `.`"));
            }
            n += frac;
        }
        let text = &self.text[start..start + n];
        self.at += n;
        if float {
            Ok(Literal::Float(
                text.parse()
                    .map_err(|_| self.error_at(start, "bad number"))?,
            ))
        } else {
            text.parse()
                .map(Literal::Int)
                .map_err(|_| self.error_at(start, "integer out of range"))
        }
    }

    /// `selector: ("[" [^\][,]+ "]")+`; `None` (nothing consumed) when the text is not
    /// one, e.g. a list.
    fn selector(&mut self) -> Result<Option<FieldPath>, ParseError> {
        let start = self.at;
        let bytes = self.text.as_bytes();
        let mut i = start;
        while bytes.get(i) == Some(&b'[') {
            let inner = bytes[i + 1..]
                .iter()
                .take_while(|b| !matches!(b, b']' | b'[' | b','))
                .count();
            if inner == 0 || bytes.get(i + 1 + inner) != Some(&b']') {
                break;
            }
            let element = self.text[i + 1..i + 1 + inner].trim();
            if element.len() >= 2
                && ((element.starts_with('"') && element.ends_with('"'))
                    || (element.starts_with('\'') && element.ends_with('\'')))
            {
                return Err(self.error_at(
                    i,
                    format!(
                        "`[{element}]` is a field reference in Logstash's grammar (a field named \
                         {element}), not a one-element list: write `== {element}`, or a list of two \
                         or more"
                    ),
                ));
            }
            i += inner + 2;
        }
        if i == start {
            return Ok(None);
        }
        // A selector followed by `,` or `]` belongs to a list (`[[a], 1]` is not ours).
        let text = &self.text[start..i];
        let path = FieldPath::parse(text).map_err(|e| self.error_at(start, e))?;
        self.at = i;
        Ok(Some(path))
    }

    /// `array: "[" cs (value (cs "," cs value)*)? cs "]"` of strings, numbers and
    /// barewords (which are strings).
    fn list(&mut self) -> Result<Literal, ParseError> {
        let start = self.at;
        self.at += 1;
        let mut items = Vec::new();
        self.skip_cs();
        if self.eat("]") {
            return Ok(Literal::List(items));
        }
        loop {
            self.skip_cs();
            let at = self.at;
            let item = match self.peek() {
                Some(q @ (b'"' | b'\'')) => Literal::Str(self.quoted(q)?.into()),
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b) if b.is_ascii_alphabetic() || b == b'_' => {
                    let w = self.bareword();
                    if w.len() < 2 {
                        return Err(self.error_at(at, "a bareword has at least two characters"));
                    }
                    Literal::Str(w.into())
                }
                _ => {
                    return Err(self.error_at(
                        at,
                        "a list in a condition holds strings, numbers and barewords",
                    ))
                }
            };
            items.push(item);
            self.skip_cs();
            if self.eat(",") {
                continue;
            }
            if self.eat("]") {
                return Ok(Literal::List(items));
            }
            return Err(self.error_at(start, "unterminated list: expected `,` or `]`"));
        }
    }
}

// ---------------------------------------------------------------------------------
// Printing: a canonical form that parses back to the same tree (nested boolean
// operators are always parenthesised, so Logstash's precedence never comes into it).

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.root.fmt(f)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Node::Truthy(p) => write!(f, "{p}"),
            Node::Literal(l) => write!(f, "{l}"),
            Node::Not(inner) => match &**inner {
                Node::Truthy(p) => write!(f, "!{p}"),
                other => write!(f, "!({other})"),
            },
            Node::Bool(op, l, r) => {
                let side = |n: &Node, f: &mut fmt::Formatter| match n {
                    Node::Bool(..) => write!(f, "({n})"),
                    _ => write!(f, "{n}"),
                };
                side(l, f)?;
                let op = match op {
                    BoolOp::And => "and",
                    BoolOp::Or => "or",
                    BoolOp::Xor => "xor",
                    BoolOp::Nand => "nand",
                };
                write!(f, " {op} ")?;
                side(r, f)
            }
            Node::Compare(op, l, r) => {
                let op = match op {
                    CmpOp::Eq => "==",
                    CmpOp::Ne => "!=",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                write!(f, "{l} {op} {r}")
            }
            Node::Match {
                field,
                regex,
                negated,
            } => {
                let op = if *negated { "!~" } else { "=~" };
                let src = regex.source();
                if lexes_as(src, b'/') {
                    write!(f, "{field} {op} /{src}/")
                } else {
                    write!(f, "{field} {op} {}", Literal::Str(src.into()))
                }
            }
            Node::In { item, set, negated } => {
                let op = if *negated { "not in" } else { "in" };
                write!(f, "{item} {op} {set}")
            }
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Operand::Field(p) => write!(f, "{p}"),
            Operand::Literal(l) => write!(f, "{l}"),
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Literal::Str(s) => {
                let q = if lexes_as(s, b'"') { '"' } else { '\'' };
                write!(f, "{q}{s}{q}")
            }
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{}", float_text(*x)),
            Literal::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// True when `text` between two `d` delimiters reads back as `text`.
pub fn lexes_as(text: &str, d: u8) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&d) {
            i += 2;
        } else if b[i] == d {
            return false;
        } else {
            i += 1;
        }
    }
    // A trailing backslash would escape the closing delimiter.
    i == b.len() && !text.ends_with('\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::value::parse_object;
    use chrono::{TimeZone, Utc};

    fn eval(cond: &str, event: &str) -> Result<bool, EvalError> {
        let c = Condition::parse(cond).unwrap_or_else(|e| panic!("{cond}: {e:?}"));
        let bump = Bump::new();
        let root = parse_object(event, &bump).unwrap();
        let mut doc = Doc::new(
            root,
            &bump,
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        );
        c.eval(&mut doc)
    }

    fn holds(cond: &str, event: &str) -> bool {
        eval(cond, event).unwrap_or_else(|e| panic!("{cond} on {event}: {e:?}"))
    }

    fn parse_error(cond: &str) -> (usize, String) {
        let e = Condition::parse(cond).expect_err(cond);
        (e.column(cond), e.message)
    }

    #[test]
    fn truthiness_is_logstash_field_truthy() {
        let e = r#"{"s":"x","empty":"","f":false,"t":true,"sf":"false","zero":0,"z":0.0,"l":[],"o":{},"n":null}"#;
        for (field, want) in [
            ("[s]", true),
            ("[empty]", false),
            ("[f]", false),
            ("[t]", true),
            ("[sf]", false),
            ("[zero]", true),
            ("[z]", true),
            ("[l]", true),
            ("[o]", true),
            ("[n]", false),
            ("[missing]", false),
        ] {
            assert_eq!(holds(field, e), want, "{field}");
            assert_eq!(holds(&format!("!{field}"), e), !want, "!{field}");
        }
    }

    #[test]
    fn equality_follows_ruby_and_java_equals() {
        let e = r#"{"level":"ERROR","n":5,"x":5.0,"tags":["a","b"],"nested":{"k":[1,2]},"sn":"5"}"#;
        assert!(holds(r#"[level] == "ERROR""#, e));
        assert!(holds(r#""ERROR" == [level]"#, e));
        assert!(!holds(r#"[level] == "error""#, e), "case-sensitive");
        assert!(holds("[n] == 5", e));
        assert!(!holds("[sn] == 5", e), "a string is not a number");
        assert!(!holds(r#"[n] == "5""#, e));
        assert!(
            !holds("[x] == 5", e),
            "an Integer literal equals only an Integer"
        );
        assert!(
            holds("[x] == 5.0", e) && holds("[n] == 5.0", e),
            "a Float is Ruby =="
        );
        assert!(holds(r#"[tags] == ["a", "b"]"#, e));
        assert!(holds("[nested][k] == [1, 2]", e));
        assert!(holds(r#"[missing] != "x""#, e), "!= is not ==");
        assert!(holds("[missing] == [other_missing]", e), "null equals null");
        assert!(holds("[n] != [x]", e), "Integer 5 does not equal Float 5.0");
        assert!(holds("[x] == [n]", e), "but Float 5.0 equals Integer 5");
        assert!(holds("[level] == [level]", e));
    }

    #[test]
    fn ordering_compares_strings_bytewise_and_numbers_numerically() {
        let e = r#"{"n":500,"f":2.5,"s":"b","t":true,"l":[1]}"#;
        assert!(holds("[n] >= 500", e) && holds("[n] <= 500", e) && !holds("[n] < 500", e));
        assert!(holds("[n] > 499.5", e) && holds("[f] < 3", e));
        assert!(holds(r#"[s] > "a""#, e) && holds(r#"[s] < "c""#, e) && holds(r#"[s] < "ba""#, e));
        assert!(
            holds(r#"[s] > "B""#, e),
            "bytewise: lowercase sorts after uppercase"
        );
        assert!(
            holds("400 < [n]", e),
            "a literal on the left compares with the converse"
        );
        assert!(holds("[n] > [f]", e), "field against field");
        // Booleans: RubyBasicObject#compareTo answers 0 for what <=> cannot order.
        assert!(holds("[t] >= 5", e) && holds("[t] <= 5", e) && !holds("[t] > 5", e));
        for bad in [
            "[missing] > 1",
            "[s] > 1",
            "[n] < \"x\"",
            "[l] > 0",
            "1 < [missing]",
        ] {
            assert!(eval(bad, e).is_err(), "{bad} must be an evaluation error");
        }
        // An error propagates through ! and is not hidden by it.
        assert!(eval("!([missing] > 1)", e).is_err());
        // ...unless a short-circuit skips it, as in Logstash.
        assert!(!holds("[missing] and [missing] > 1", e));
        assert!(holds("[n] or [missing] > 1", e));
    }

    #[test]
    fn regex_matches_are_unanchored_ruby_style_with_line_anchors() {
        let e = r#"{"m":"first line\nERROR: boom","n":5,"p":"/var/log/a.log"}"#;
        assert!(holds("[m] =~ /boom/", e));
        assert!(
            holds("[m] =~ /^ERROR/", e),
            "^ matches after a newline, as in Ruby"
        );
        assert!(
            !holds(r"[m] =~ /\AERROR/", e),
            "\\A is the start of the string"
        );
        assert!(holds("[m] =~ /line$/", e), "$ matches before a newline");
        assert!(holds(r#"[m] =~ "ERR(OR)?""#, e), "a string is a pattern");
        assert!(!holds("[n] =~ /5/", e), "only strings match");
        assert!(holds("[missing] !~ /x/", e));
        assert!(
            holds(r"[p] =~ /^\/var\/log\//", e),
            "\\/ escapes the delimiter"
        );
        assert!(
            !holds("[m] =~ /first.line.ERROR/", e),
            ". does not match a newline"
        );
        let (col, msg) = parse_error("[m] =~ /(?<=a)b/");
        assert_eq!(col, 8, "{msg}");
        assert!(msg.contains("regular expression"), "{msg}");
    }

    #[test]
    fn in_follows_event_condition_cases() {
        let e = r#"{"level":"ERROR","tags":["_jsonparsefailure","x"],"codes":[500,503],"c":500,"s":"500","msg":"disk full","sub":"full","f":1.0}"#;
        // string literal in a field: substring of a string, element of a list
        assert!(holds(r#""_jsonparsefailure" in [tags]"#, e));
        assert!(
            holds(r#""ERR" in [level]"#, e),
            "substring of a string field"
        );
        assert!(
            !holds(r#""_json" in [tags]"#, e),
            "list elements match whole"
        );
        assert!(holds(r#""nope" not in [tags]"#, e));
        // field in a list literal: compared as strings
        assert!(holds(r#"[level] in ["ERROR", "WARN"]"#, e));
        assert!(holds("[c] in [500, 503]", e) && holds("[s] in [500, 503]", e));
        assert!(!holds(r#"[missing] in ["", "x"]"#, e));
        assert!(holds("[f] in [1.0, 2]", e), "1.0 to_s is \"1.0\"");
        // field in a scalar literal: the field's string inside the literal
        assert!(holds(r#"[level] in "ERROR,WARN""#, e));
        assert!(!holds("[c] in \"500\"", e), "only a string field");
        // number literal in a field: list membership with Java equals
        assert!(holds("500 in [codes]", e));
        assert!(
            !holds("500 in [c]", e),
            "Logstash never matches a non-list field here"
        );
        // field in field
        assert!(holds("[sub] in [msg]", e));
        assert!(holds("[c] in [codes]", e));
        assert!(
            !holds("[tags] in [tags]", e),
            "a list on the left never matches"
        );
        assert!(
            eval("[missing] in [codes]", e).is_err(),
            "null in a list throws in Logstash"
        );
        // literal in literal, folded
        assert!(holds(r#""a" in ["a", "b"]"#, e) && holds(r#""b" in "abc""#, e));
    }

    #[test]
    fn boolean_operators_and_logstash_precedence() {
        let e = r#"{"t":true,"f":false}"#;
        assert!(holds("[t] and [t]", e) && !holds("[t] and [f]", e));
        assert!(holds("[t] or [f]", e) && !holds("[f] or [f]", e));
        assert!(holds("[t] xor [f]", e) && !holds("[t] xor [t]", e));
        assert!(holds("[t] nand [f]", e) && !holds("[t] nand [t]", e));
        assert!(holds("[f] and [f] or [t]", e), "and binds tighter than or");
        assert!(holds("[t] or [f] and [f]", e));
        // Logstash's shunting yard pops one operator per incoming one:
        // `a and b and c or d` is `a and ((b and c) or d)`.
        let c = Condition::parse("[a] and [b] and [c] or [d]").unwrap();
        assert_eq!(c.to_string(), "[a] and (([b] and [c]) or [d])");
        assert!(
            !holds("[f] and [t] and [t] or [t]", e),
            "Logstash's grouping, not ((f and t and t) or t)"
        );
        let (col, msg) = parse_error("[t] xor [f] and [t]");
        assert_eq!(col, 5, "{msg}");
        assert!(msg.contains("xor and nand"), "{msg}");
        assert!(holds("([t] xor [f]) and [t]", e));
    }

    #[test]
    fn lazy_evaluation_reads_only_named_fields() {
        let bump = Bump::new();
        let root = parse_object(
            r#"{"@timestamp":"2025-04-05T10:23:45.000Z","message":"{\"a\":1}","level":"INFO","big":{"x":[1,2,3]}}"#,
            &bump,
        )
        .unwrap();
        let mut doc = Doc::new(root, &bump, Utc::now());
        let c = Condition::parse(r#"[level] == "INFO""#).unwrap();
        assert!(c.eval(&mut doc).unwrap());
        for (k, v) in doc.root.fields.iter() {
            assert!(
                matches!(v, Value::Raw(_)),
                "{k} was parsed by a condition that does not read it"
            );
        }
        assert!(!doc.modified);
    }

    #[test]
    fn syntax_errors_name_the_column() {
        for (cond, col, what) in [
            ("[level] = \"x\"", 9, "unexpected text"),
            ("level == \"x\"", 1, "field reference"),
            ("[level] == ", 12, "end of the condition"),
            ("([a] and [b]", 13, "`)`"),
            ("[a] == \"x", 8, "unterminated string"),
            ("[a] in [\"x\"]", 8, "not a one-element list"),
            ("[a] > [1, 2]", 7, "list cannot be ordered"),
            ("[a] and \"x\"", 9, "literal"),
            ("!\"x\"", 2, "`!` takes"),
            ("[a] == 1.", 8, "digits after"),
            ("\"x\" =~ /y/", 1, "field reference on the left"),
            ("size([a]) > 1", 1, "method calls"),
            ("[a] == 1 and", 13, "end of the condition"),
        ] {
            let (c, msg) = parse_error(cond);
            assert!(msg.contains(what), "{cond}: {msg}");
            assert_eq!(c, col, "{cond}: {msg}");
        }
    }

    #[test]
    fn strings_keep_backslashes_as_logstash_does_without_support_escapes() {
        let e = r#"{"a":"x\\\"y"}"#; // the value is x\"y
        assert!(holds(r#"[a] == "x\"y""#, e));
        assert!(holds(r#"[a] == 'x\"y'"#, e));
    }

    #[test]
    fn printing_reparses_to_the_same_tree() {
        for cond in [
            r#"[level] == "ERROR""#,
            r#"![a] or !([b] > 1.5) and [c][d] in ["x", 2, -3.25]"#,
            r#"[m] =~ /a\/b/ xor [n] !~ "c/d""#,
            r#"[a] not in [b] nand 'it"s' in [c]"#,
            r#"[x] in []"#,
            "\"lit\"",
        ] {
            let c = Condition::parse(cond).unwrap();
            let printed = c.to_string();
            assert_eq!(
                Condition::parse(&printed).unwrap(),
                c,
                "{cond} -> {printed}"
            );
        }
    }
}
