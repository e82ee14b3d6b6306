//! From the parsed Logstash configuration to lumberd's TOML. Each plugin and option has
//! one rule here; anything without one is a [`Refusal`] naming it and its line.

use std::fmt::Write as _;

use crate::pipeline::condition::{BoolOp, CmpOp, Literal, Node, Operand};
use crate::pipeline::{Condition, FieldPath};

use super::parse::{Arm, Attr, Item, Plugin, Section, Val};

/// What could not be translated, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `file:line`.
    pub at: String,
    /// The plugin, or `plugin.option`.
    pub what: String,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.what, self.reason)
    }
}

/// The translation: the TOML (refusals appear in it as comments where they stood) and
/// the refusals.
#[derive(Debug, Clone)]
pub struct Import {
    pub toml: String,
    pub refusals: Vec<Refusal>,
}

/// The metadata key output conditionals route through.
const INDEX_KEY: &str = "[@metadata][_lumberd_index]";

/// What a translated filter may change, for the branch-flattening check.
#[derive(Debug, Clone)]
enum Writes {
    /// A json filter without a target: any top-level field, tags and `@metadata`.
    All,
    Fields(Vec<FieldPath>),
}

/// One lumberd filter table.
#[derive(Debug, Clone)]
struct Emitted {
    comment: String,
    key: String,
    writes: Writes,
    when: Option<Node>,
}

/// A line of the filter list: a filter, or a refusal left where it stood.
#[derive(Debug, Clone)]
enum Entry {
    Filter(Emitted),
    Refused(Refusal),
}

struct Ctx<'a> {
    file: &'a str,
    refusals: Vec<Refusal>,
    /// Comments on top-level sections: ignored options, credentials.
    notes: Vec<String>,
    flags: usize,
}

impl Ctx<'_> {
    fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.file)
    }

    fn refuse(
        &mut self,
        line: usize,
        what: impl Into<String>,
        reason: impl Into<String>,
    ) -> Refusal {
        let r = Refusal {
            at: self.at(line),
            what: what.into(),
            reason: reason.into(),
        };
        self.refusals.push(r.clone());
        r
    }
}

pub fn translate(sections: &[(String, Section, Vec<Item>)]) -> Import {
    let mut refusals = Vec::new();
    let mut server: Vec<String> = Vec::new();
    let mut tls: Vec<String> = Vec::new();
    let mut output: Vec<String> = Vec::new();
    let mut pipeline: Vec<String> = Vec::new();
    let mut filters: Vec<Entry> = Vec::new();
    let mut inputs = 0;
    let mut es_outputs: Vec<(String, Option<Node>, Plugin)> = Vec::new();
    let mut routed = false;
    let mut output_notes = Vec::new();
    let mut flags = 0;
    for (file, kind, items) in sections {
        let mut cx = Ctx {
            file,
            refusals: Vec::new(),
            notes: Vec::new(),
            flags,
        };
        match kind {
            Section::Input => {
                for item in items {
                    match item {
                        Item::Plugin(p) if p.name == "beats" => {
                            inputs += 1;
                            if inputs > 1 {
                                cx.refuse(
                                    p.line,
                                    "beats",
                                    "a second beats input: lumberd listens on one port",
                                );
                                continue;
                            }
                            beats(&mut cx, p, &mut server, &mut tls);
                        }
                        Item::Plugin(p) => {
                            cx.refuse(
                                p.line,
                                &p.name,
                                "lumberd's only input is the Beats protocol (beats)",
                            );
                        }
                        Item::Branch(arms) => {
                            cx.refuse(
                                arms[0].line,
                                "if",
                                "conditionals in an input section have no meaning",
                            );
                        }
                    }
                }
            }
            Section::Filter => {
                let mut out = Vec::new();
                flatten(&mut cx, items, None, &mut out);
                filters.extend(out);
            }
            Section::Output => {
                collect_outputs(
                    &mut cx,
                    items,
                    &mut es_outputs,
                    &mut routed,
                    &mut output_notes,
                );
            }
        }
        flags = cx.flags;
        for n in cx.notes {
            server.push(n);
        }
        refusals.extend(cx.refusals);
    }
    // The outputs: one Elasticsearch connection; several outputs only as the arms of one
    // if/else chain, routed through [@metadata].
    let mut index_key: Option<String> = None;
    let mut fingerprint: Option<String> = None;
    if let Some((file, _, first)) = es_outputs.first().cloned() {
        let mut cx = Ctx {
            file: &file,
            refusals: Vec::new(),
            notes: Vec::new(),
            flags,
        };
        let base = connection_key(first.attrs.iter());
        let same = es_outputs
            .iter()
            .all(|(_, _, p)| connection_key(p.attrs.iter()) == base);
        if !same {
            cx.refuse(
                es_outputs[1].2.line,
                "elasticsearch",
                "outputs that differ in more than `index`: lumberd writes to one Elasticsearch \
                 with one set of settings",
            );
        } else {
            elasticsearch(&mut cx, &first, &mut output, &mut fingerprint);
            if !routed {
                if let Some(index) = option(&first, "index") {
                    let text = index.value.text().unwrap_or_default().to_string();
                    index_key = Some(format!(
                        "# index ({})\nindex = {}",
                        cx.at(index.line),
                        toml_str(&text)
                    ));
                } else {
                    index_key = Some(format!(
                        "# index: Logstash's default is logstash-%{{+yyyy.MM.dd}} with ILM \
                         rollover; lumberd's is qwen-logs-%{{+yyyy.MM.dd}} ({})",
                        cx.at(first.line)
                    ));
                }
            } else {
                index_key = Some(format!(
                    "# index: chosen by the output conditionals, routed through {INDEX_KEY} \
                     (see the filters at the end)\nindex = {}",
                    toml_str(&format!("%{{{INDEX_KEY}}}"))
                ));
                for (_, guard, p) in &es_outputs {
                    let index = option(p, "index")
                        .and_then(|a| a.value.text().map(str::to_string))
                        .unwrap_or_else(|| "logstash-%{+yyyy.MM.dd}".into());
                    filters.push(Entry::Filter(Emitted {
                        comment: format!("route to this index ({})", cx.at(p.line)),
                        key: format!(
                            "replace = {{ fields = {{ {} = {} }} }}",
                            toml_str(INDEX_KEY),
                            toml_str(&index)
                        ),
                        writes: Writes::Fields(vec![path(INDEX_KEY)]),
                        when: guard.clone(),
                    }));
                }
                filters.push(Entry::Filter(Emitted {
                    comment: "events no elasticsearch output takes are not stored, as in Logstash"
                        .into(),
                    key: "drop = {}".into(),
                    writes: Writes::Fields(vec![]),
                    when: Some(Node::Not(Box::new(Node::Truthy(path(INDEX_KEY))))),
                }));
            }
        }
        refusals.extend(cx.refusals);
        output.extend(cx.notes);
    } else {
        output.push(
            "# no elasticsearch output: events go to the embedded file output (data_dir)".into(),
        );
    }
    output.extend(output_notes);
    let mut toml = String::new();
    toml.push_str(
        "# lumberd configuration translated from Logstash by `lumberd import-logstash`.\n\
         # Each part names the Logstash line it came from. Check it with `lumberd check-config`.\n",
    );
    for r in &refusals {
        if !r.at.is_empty() && filters_mention(&filters, r) {
            continue;
        }
        let _ = writeln!(toml, "# REFUSED {r}");
    }
    let mut section = |name: &str, lines: &[String]| {
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(toml, "\n[{name}]");
        for l in lines {
            toml.push_str(l);
            toml.push('\n');
        }
    };
    section("server", &server);
    section("tls", &tls);
    section("output", &output);
    if let Some(i) = index_key {
        pipeline.push(i);
    }
    if let Some(f) = fingerprint {
        pipeline.push(f);
    }
    if !pipeline.is_empty() || !filters.is_empty() {
        let _ = writeln!(toml, "\n[pipeline]");
        for l in &pipeline {
            toml.push_str(l);
            toml.push('\n');
        }
        if filters.is_empty() {
            toml.push_str("# no filters\n");
        }
    }
    for e in &filters {
        match e {
            Entry::Filter(f) => {
                let _ = writeln!(toml, "\n# {}\n[[pipeline.filter]]", f.comment);
                if let Some(w) = &f.when {
                    let _ = writeln!(
                        toml,
                        "if = {}",
                        toml_str(&Condition::from_node(w.clone()).to_string())
                    );
                }
                let _ = writeln!(toml, "{}", f.key);
            }
            Entry::Refused(r) => {
                let _ = writeln!(toml, "\n# REFUSED {r}");
            }
        }
    }
    Import { toml, refusals }
}

fn filters_mention(filters: &[Entry], r: &Refusal) -> bool {
    filters
        .iter()
        .any(|e| matches!(e, Entry::Refused(x) if x == r))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn path(text: &str) -> FieldPath {
    FieldPath::parse(text).expect("a valid built-in path")
}

/// A Logstash field reference as a lumberd path: `[a][b]` as it is; a bare name is one
/// top-level key, even with dots in it (`a.b` is not nested in Logstash).
fn field_text(name: &str) -> String {
    if name.starts_with('[') || !name.contains('.') {
        name.to_string()
    } else {
        format!("[{name}]")
    }
}

fn field(cx: &mut Ctx, line: usize, what: &str, name: &str) -> Option<FieldPath> {
    if name.contains("%{") {
        cx.refuse(
            line,
            what,
            format!("`{name}`: field names computed with %{{}} are not supported"),
        );
        return None;
    }
    match FieldPath::parse(&field_text(name)) {
        Ok(p) => Some(p),
        Err(e) => {
            cx.refuse(line, what, e);
            None
        }
    }
}

fn option<'p>(p: &'p Plugin, name: &str) -> Option<&'p Attr> {
    p.attrs.iter().rev().find(|a| a.name == name)
}

/// Strings of a string-or-array option.
fn strings(v: &Val) -> Option<Vec<String>> {
    match v {
        Val::Array(items) => items.iter().map(|i| i.text().map(str::to_string)).collect(),
        other => other.text().map(|s| vec![s.to_string()]),
    }
}

fn boolean(v: &Val) -> Option<bool> {
    match v.text()? {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A hash option, or an array of alternating keys and values (both are Logstash forms).
fn pairs(v: &Val) -> Option<Vec<(String, Val)>> {
    match v {
        Val::Hash(entries) => Some(entries.clone()),
        Val::Array(items) if items.len() % 2 == 0 => items
            .chunks(2)
            .map(|c| Some((c[0].text()?.to_string(), c[1].clone())))
            .collect(),
        _ => None,
    }
}

/// `${VAR}` (Logstash's environment reference): the variable name.
fn env_ref(s: &str) -> Option<&str> {
    s.strip_prefix("${")?
        .strip_suffix('}')
        .map(|v| v.split(':').next().unwrap_or(v))
}

/// Options every plugin accepts that change nothing lumberd does.
const HARMLESS: &[&str] = &["id", "enable_metric", "ecs_compatibility", "periodic_flush"];

// ---------------------------------------------------------------------------------
// Inputs

fn beats(cx: &mut Ctx, p: &Plugin, server: &mut Vec<String>, tls: &mut Vec<String>) {
    let at = cx.at(p.line);
    let mut host = "0.0.0.0".to_string();
    let mut port = "5044".to_string();
    let mut ssl = false;
    let mut tls_lines = Vec::new();
    for a in &p.attrs {
        let what = format!("beats.{}", a.name);
        let text = a.value.text().map(str::to_string);
        match (a.name.as_str(), text) {
            ("port", Some(t)) => port = t,
            ("host", Some(t)) => host = t,
            ("ssl" | "ssl_enabled", Some(t)) => ssl = t == "true",
            ("ssl_certificate", Some(t)) => {
                tls_lines.push(format!("certificate = {}", toml_str(&t)))
            }
            ("ssl_key", Some(t)) => tls_lines.push(format!("key = {}", toml_str(&t))),
            ("ssl_key_passphrase", Some(t)) => {
                let var = env_ref(&t).unwrap_or("TLS_KEY_PASSPHRASE").to_string();
                tls_lines.push(format!(
                    "# the key's passphrase ({}): set {var} in lumberd's environment, never in this file",
                    cx.at(a.line)
                ));
                tls_lines.push(format!("key_passphrase_env = {}", toml_str(&var)));
            }
            ("ssl_certificate_authorities", _) => match strings(&a.value) {
                Some(cas) => tls_lines.push(format!(
                    "client_ca = [{}]",
                    cas.iter()
                        .map(|c| toml_str(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                None => {
                    cx.refuse(a.line, what, "expected a path or a list of paths");
                }
            },
            ("ssl_client_authentication", Some(t))
                if matches!(t.as_str(), "none" | "optional" | "required") =>
            {
                tls_lines.push(format!("client_auth = {}", toml_str(&t)));
            }
            ("ssl_verify_mode", Some(t)) => {
                let mode = match t.as_str() {
                    "none" => "none",
                    "peer" => "optional",
                    "force_peer" => "required",
                    _ => {
                        cx.refuse(
                            a.line,
                            what,
                            format!("`{t}` is not none, peer or force_peer"),
                        );
                        continue;
                    }
                };
                tls_lines.push(format!(
                    "client_auth = {}  # ssl_verify_mode {t}",
                    toml_str(mode)
                ));
            }
            ("ssl_supported_protocols", _) => {
                let protos = strings(&a.value).unwrap_or_default();
                if protos.iter().any(|p| p == "TLSv1.2") {
                    tls_lines.push("min_version = \"1.2\"".into());
                } else if protos.iter().all(|p| p == "TLSv1.3") && !protos.is_empty() {
                    tls_lines.push("min_version = \"1.3\"".into());
                } else {
                    cx.refuse(a.line, what, "lumberd offers TLS 1.2 and 1.3 only");
                }
            }
            ("ssl_handshake_timeout", Some(t)) => tls_lines.push(format!(
                "handshake_timeout = {}",
                toml_str(&format!("{t}ms"))
            )),
            ("client_inactivity_timeout", Some(t)) => server.push(format!(
                "idle_timeout = {}  # client_inactivity_timeout",
                toml_str(&format!("{t}s"))
            )),
            ("include_codec_tag", _) => cx.notes.push(format!(
                "# beats.include_codec_tag ({}): lumberd never adds beats_input_codec_*_applied",
                cx.at(a.line)
            )),
            ("codec", Some(t)) if t == "plain" => {}
            (name, _) if HARMLESS.contains(&name) => {}
            (name, _) => {
                cx.refuse(
                    a.line,
                    what,
                    format!("the beats input option `{name}` has no lumberd equivalent"),
                );
            }
        }
    }
    let listen = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    server.insert(
        0,
        format!("# beats input ({at})\nlisten = {}", toml_str(&listen)),
    );
    if ssl {
        tls.push(format!("# beats input ssl ({at})\nenabled = true"));
        tls.extend(tls_lines);
    } else if !tls_lines.is_empty() {
        cx.refuse(p.line, "beats", "ssl_* options without ssl_enabled => true");
    }
}

// ---------------------------------------------------------------------------------
// Filters

/// Translates a filter section's items under `guard` (the conditions of the enclosing
/// branches), appending lumberd filters in order.
fn flatten(cx: &mut Ctx, items: &[Item], guard: Option<&Node>, out: &mut Vec<Entry>) {
    for item in items {
        match item {
            Item::Plugin(p) => match filter(cx, p) {
                Ok(emitted) => out.extend(emitted.into_iter().map(|mut e| {
                    e.when = guard.cloned();
                    Entry::Filter(e)
                })),
                Err(r) => out.push(Entry::Refused(r)),
            },
            Item::Branch(arms) => branch(cx, arms, guard, out),
        }
    }
}

fn and(a: Option<&Node>, b: Node) -> Node {
    match a {
        Some(a) => Node::Bool(BoolOp::And, Box::new(a.clone()), Box::new(b)),
        None => b,
    }
}

/// `if A {..} else if B {..} else {..}`: arm i runs when no earlier condition held and
/// its own does.
fn arm_condition(arms: &[Arm], i: usize) -> Option<Node> {
    let mut cond: Option<Node> = None;
    for earlier in &arms[..i] {
        let c = earlier
            .cond
            .as_ref()
            .expect("only the last arm is an else")
            .root()
            .clone();
        cond = Some(and(cond.as_ref(), Node::Not(Box::new(c))));
    }
    match &arms[i].cond {
        Some(c) => Some(and(cond.as_ref(), c.root().clone())),
        None => cond,
    }
}

fn branch(cx: &mut Ctx, arms: &[Arm], guard: Option<&Node>, out: &mut Vec<Entry>) {
    // Translate each arm once to learn what its filters write.
    let mut bodies = Vec::new();
    for arm in arms {
        let mut body = Vec::new();
        flatten(cx, &arm.body, None, &mut body);
        bodies.push(body);
    }
    // Outer conditions are checked by the outer branch, whose writes include these.
    let reads: Vec<FieldPath> = arms
        .iter()
        .filter_map(|a| a.cond.as_ref())
        .flat_map(|c| c.fields().into_iter().cloned())
        .collect();
    let conflict = bodies.iter().flatten().any(|e| match e {
        Entry::Filter(f) => match &f.writes {
            Writes::All => !reads.is_empty(),
            Writes::Fields(w) => w
                .iter()
                .any(|w| reads.iter().any(|r| r.is_within(w) || w.is_within(r))),
        },
        Entry::Refused(_) => false,
    });
    let combine = |inner: Option<Node>, when: Option<Node>| match (inner, when) {
        (Some(a), Some(b)) => Some(Node::Bool(BoolOp::And, Box::new(a), Box::new(b))),
        (a, b) => a.or(b),
    };
    if !conflict {
        for (i, body) in bodies.into_iter().enumerate() {
            let cond = combine(guard.cloned(), arm_condition(arms, i));
            for mut e in body {
                if let Entry::Filter(f) = &mut e {
                    f.when = combine(cond.clone(), f.when.take());
                }
                out.push(e);
            }
        }
        return;
    }
    // A filter in the branch writes what a condition reads: Logstash decides the branch
    // once, before any of it runs. Record the decision, then test the record.
    cx.flags += 1;
    let flag = path(&format!("[@metadata][_lumberd_branch_{}]", cx.flags));
    for i in 0..arms.len() {
        out.push(Entry::Filter(Emitted {
            comment: format!(
                "branch decided once ({}): a filter inside it changes what its condition reads",
                cx.at(arms[i].line)
            ),
            key: format!(
                "replace = {{ fields = {{ {} = \"{}\" }} }}",
                toml_str(&flag.to_string()),
                i + 1
            ),
            writes: Writes::Fields(vec![flag.clone()]),
            when: combine(guard.cloned(), arm_condition(arms, i)),
        }));
    }
    for (i, body) in bodies.into_iter().enumerate() {
        let taken = Node::Compare(
            CmpOp::Eq,
            Operand::Field(flag.clone()),
            Operand::Literal(Literal::Str((i + 1).to_string().into())),
        );
        for mut e in body {
            if let Entry::Filter(f) = &mut e {
                f.when = combine(Some(taken.clone()), f.when.take());
            }
            out.push(e);
        }
    }
}

fn emitted(comment: String, key: String, writes: Writes) -> Emitted {
    Emitted {
        comment,
        key,
        writes,
        when: None,
    }
}

fn tags_key(tags: &[String]) -> String {
    format!(
        "[{}]",
        tags.iter()
            .map(|t| toml_str(t))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn fields_key(fields: &[FieldPath]) -> String {
    format!(
        "[{}]",
        fields
            .iter()
            .map(|f| toml_str(&f.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// One Logstash filter: the lumberd filters it becomes, or why it cannot be.
fn filter(cx: &mut Ctx, p: &Plugin) -> Result<Vec<Emitted>, Refusal> {
    let before = cx.refusals.len();
    let out = match p.name.as_str() {
        "json" => json(cx, p),
        "date" => date(cx, p),
        "mutate" => mutate(cx, p),
        "drop" => {
            for a in &p.attrs {
                if !HARMLESS.contains(&a.name.as_str()) {
                    cx.refuse(
                        a.line,
                        format!("drop.{}", a.name),
                        "lumberd's drop has no options",
                    );
                }
            }
            vec![emitted(
                format!("drop ({})", cx.at(p.line)),
                "drop = {}".into(),
                Writes::Fields(vec![]),
            )]
        }
        "prune" => prune(cx, p),
        other => {
            return Err(cx.refuse(
                p.line,
                other,
                format!(
                "lumberd has no {other} filter (it has json, date, mutate's operations and drop)"
            ),
            ))
        }
    };
    if cx.refusals.len() > before {
        // The first refusal of this plugin stands in the filter list where it was.
        return Err(cx.refusals[before].clone());
    }
    Ok(out)
}

/// Common options that only apply when the filter succeeds (`filter_matched`), which
/// lumberd's json and date cannot express.
fn refuse_decorations(cx: &mut Ctx, p: &Plugin) {
    for a in &p.attrs {
        if matches!(
            a.name.as_str(),
            "add_field" | "add_tag" | "remove_field" | "remove_tag"
        ) {
            cx.refuse(
                a.line,
                format!("{}.{}", p.name, a.name),
                format!(
                    "applied by Logstash only when {} succeeds; lumberd cannot condition on that",
                    p.name
                ),
            );
        }
    }
}

fn json(cx: &mut Ctx, p: &Plugin) -> Vec<Emitted> {
    refuse_decorations(cx, p);
    let mut source = None;
    let mut target = None;
    let mut tags: Option<Vec<String>> = None;
    let mut skip = false;
    for a in &p.attrs {
        let what = format!("json.{}", a.name);
        match a.name.as_str() {
            "source" => source = a.value.text().and_then(|s| field(cx, a.line, &what, s)),
            "target" => target = a.value.text().and_then(|s| field(cx, a.line, &what, s)),
            "tag_on_failure" => tags = strings(&a.value),
            "skip_on_invalid_json" => skip = boolean(&a.value).unwrap_or(false),
            "add_field" | "add_tag" | "remove_field" | "remove_tag" => {}
            n if HARMLESS.contains(&n) => {}
            n => {
                cx.refuse(
                    a.line,
                    what,
                    format!("the json filter option `{n}` has no lumberd equivalent"),
                );
            }
        }
    }
    let Some(source) = source else {
        cx.refuse(p.line, "json", "`source` is required");
        return vec![];
    };
    let mut key = format!("json = {{ source = {}", toml_str(&source.to_string()));
    if let Some(t) = &target {
        let _ = write!(key, ", target = {}", toml_str(&t.to_string()));
    }
    if skip {
        key.push_str(", tag_on_failure = []");
    } else if let Some(t) = &tags {
        let _ = write!(key, ", tag_on_failure = {}", tags_key(t));
    }
    key.push_str(" }");
    let writes = match target {
        Some(t) => Writes::Fields(vec![t, path("tags")]),
        None => Writes::All,
    };
    vec![emitted(format!("json ({})", cx.at(p.line)), key, writes)]
}

fn date(cx: &mut Ctx, p: &Plugin) -> Vec<Emitted> {
    refuse_decorations(cx, p);
    let mut matched: Option<Vec<String>> = None;
    let mut target = path("@timestamp");
    let mut timezone = None;
    let mut tags = None;
    for a in &p.attrs {
        let what = format!("date.{}", a.name);
        match a.name.as_str() {
            "match" => matched = strings(&a.value),
            "target" => {
                if let Some(t) = a.value.text().and_then(|s| field(cx, a.line, &what, s)) {
                    target = t;
                }
            }
            "timezone" => match a.value.text() {
                Some(t) if t.contains("%{") => {
                    cx.refuse(
                        a.line,
                        what,
                        "a timezone computed per event is not supported",
                    );
                }
                Some(t) => timezone = Some(t.to_string()),
                None => {
                    cx.refuse(a.line, what, "expected a string");
                }
            },
            "locale" => match a.value.text() {
                Some(l) if l.to_ascii_lowercase().starts_with("en") => {}
                _ => {
                    cx.refuse(
                        a.line,
                        what,
                        "lumberd reads month and day names in English only",
                    );
                }
            },
            "tag_on_failure" => tags = strings(&a.value),
            "add_field" | "add_tag" | "remove_field" | "remove_tag" => {}
            n if HARMLESS.contains(&n) => {}
            n => {
                cx.refuse(
                    a.line,
                    what,
                    format!("the date filter option `{n}` has no lumberd equivalent"),
                );
            }
        }
    }
    let Some(m) = matched.filter(|m| m.len() >= 2) else {
        cx.refuse(
            p.line,
            "date.match",
            "`match` needs a field and at least one format",
        );
        return vec![];
    };
    let Some(f) = field(cx, p.line, "date.match", &m[0]) else {
        return vec![];
    };
    let mut key = format!(
        "date = {{ field = {}, formats = {}, target = {}",
        toml_str(&f.to_string()),
        tags_key(&m[1..]),
        toml_str(&target.to_string())
    );
    if let Some(z) = timezone {
        let _ = write!(key, ", timezone = {}", toml_str(&z));
    }
    if let Some(t) = &tags {
        let _ = write!(key, ", tag_on_failure = {}", tags_key(t));
    }
    key.push_str(" }");
    vec![emitted(
        format!("date ({})", cx.at(p.line)),
        key,
        Writes::Fields(vec![target, path("tags")]),
    )]
}

/// The order logstash-filter-mutate's `filter` applies its operations in, then the
/// common `filter_matched` options.
const MUTATE_ORDER: &[&str] = &[
    "coerce",
    "rename",
    "update",
    "replace",
    "convert",
    "gsub",
    "uppercase",
    "capitalize",
    "lowercase",
    "strip",
    "split",
    "join",
    "merge",
    "copy",
    "add_field",
    "remove_field",
    "add_tag",
    "remove_tag",
];

fn mutate(cx: &mut Ctx, p: &Plugin) -> Vec<Emitted> {
    let mut tag_on_failure: Option<Vec<String>> = None;
    for a in &p.attrs {
        match a.name.as_str() {
            "tag_on_failure" => tag_on_failure = strings(&a.value),
            n if HARMLESS.contains(&n) || MUTATE_ORDER.contains(&n) => {}
            n => {
                cx.refuse(
                    a.line,
                    format!("mutate.{n}"),
                    format!("mutate has no option `{n}` lumberd knows"),
                );
            }
        }
    }
    let tags_suffix = tag_on_failure
        .as_ref()
        .map(|t| format!(", tag_on_failure = {}", tags_key(t)))
        .unwrap_or_default();
    let mut out = Vec::new();
    for op in MUTATE_ORDER {
        let Some(a) = option(p, op) else { continue };
        let what = format!("mutate.{op}");
        let comment = format!("mutate {op} ({})", cx.at(a.line));
        let field_list = |cx: &mut Ctx| -> Option<Vec<FieldPath>> {
            let names = strings(&a.value)?;
            names.iter().map(|n| field(cx, a.line, &what, n)).collect()
        };
        let field_map = |cx: &mut Ctx, templates: bool| -> Option<Vec<(FieldPath, String)>> {
            let Some(pairs) = pairs(&a.value) else {
                cx.refuse(a.line, &what, "expected a hash");
                return None;
            };
            pairs
                .iter()
                .map(|(k, v)| {
                    let f = field(cx, a.line, &what, k)?;
                    match v.text() {
                        Some(t) if templates || !t.contains("%{") => Some((f, t.to_string())),
                        Some(_) => {
                            cx.refuse(a.line, &what, "names computed with %{} are not supported");
                            None
                        }
                        None => {
                            cx.refuse(a.line, &what, format!("`{k}`: expected one string value"));
                            None
                        }
                    }
                })
                .collect()
        };
        let map_key = |pairs: &[(FieldPath, String)], as_path: bool| {
            pairs
                .iter()
                .map(|(f, v)| {
                    let v = if as_path { field_text(v) } else { v.clone() };
                    format!("{} = {}", toml_str(&f.to_string()), toml_str(&v))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match *op {
            "rename" => {
                let Some(m) = field_map(cx, false) else {
                    continue;
                };
                let mut writes: Vec<FieldPath> = m.iter().map(|(f, _)| f.clone()).collect();
                for (_, to) in &m {
                    if let Some(t) = field(cx, a.line, &what, to) {
                        writes.push(t);
                    }
                }
                out.push(emitted(
                    comment,
                    format!("rename = {{ fields = {{ {} }} }}", map_key(&m, true)),
                    Writes::Fields(writes),
                ));
            }
            "replace" | "add_field" => {
                let Some(m) = field_map(cx, true) else {
                    continue;
                };
                let writes = m.iter().map(|(f, _)| f.clone()).collect();
                out.push(emitted(
                    comment,
                    format!("{op} = {{ fields = {{ {} }} }}", map_key(&m, false)),
                    Writes::Fields(writes),
                ));
            }
            "convert" => {
                let Some(m) = field_map(cx, false) else {
                    continue;
                };
                if let Some((_, t)) = m.iter().find(|(_, t)| {
                    !matches!(t.as_str(), "integer" | "float" | "string" | "boolean")
                }) {
                    cx.refuse(a.line, &what, format!("conversion to `{t}` is not supported (integer, float, string, boolean are)"));
                    continue;
                }
                let mut writes: Vec<FieldPath> = m.iter().map(|(f, _)| f.clone()).collect();
                writes.push(path("tags"));
                out.push(emitted(
                    comment,
                    format!(
                        "convert = {{ fields = {{ {} }}{tags_suffix} }}",
                        map_key(&m, false)
                    ),
                    Writes::Fields(writes),
                ));
            }
            "uppercase" | "lowercase" | "strip" | "remove_field" => {
                let Some(fields) = field_list(cx) else {
                    cx.refuse(a.line, &what, "expected a field name or a list of them");
                    continue;
                };
                let (name, suffix) = match *op {
                    "remove_field" => ("remove", String::new()),
                    "strip" => ("strip", tags_suffix.clone()),
                    other => (other, String::new()),
                };
                let mut writes = fields.clone();
                if *op == "strip" {
                    writes.push(path("tags"));
                }
                out.push(emitted(
                    comment,
                    format!("{name} = {{ fields = {}{suffix} }}", fields_key(&fields)),
                    Writes::Fields(writes),
                ));
            }
            "add_tag" => {
                let Some(tags) = strings(&a.value) else {
                    cx.refuse(a.line, &what, "expected a tag or a list of tags");
                    continue;
                };
                out.push(emitted(
                    comment,
                    format!("add_tag = {{ tags = {} }}", tags_key(&tags)),
                    Writes::Fields(vec![path("tags")]),
                ));
            }
            other => {
                cx.refuse(
                    a.line,
                    &what,
                    format!("lumberd has no equivalent of mutate's {other}"),
                );
            }
        }
    }
    out
}

/// prune, where it is a removal: `blacklist_names` of anchored literal names.
fn prune(cx: &mut Ctx, p: &Plugin) -> Vec<Emitted> {
    let mut fields = Vec::new();
    for a in &p.attrs {
        let what = format!("prune.{}", a.name);
        match a.name.as_str() {
            "blacklist_names" => {
                for pat in strings(&a.value).unwrap_or_default() {
                    let name = pat
                        .strip_prefix('^')
                        .and_then(|s| s.strip_suffix('$'))
                        .filter(|s| {
                            s.chars().all(|c| {
                                c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '@'
                            })
                        });
                    match name.and_then(|n| FieldPath::parse(n).ok()) {
                        Some(f) => fields.push(f),
                        None => {
                            cx.refuse(
                                a.line,
                                &what,
                                format!("`{pat}` is a pattern (prune matches names by regex, unanchored): only `^name$` maps to remove"),
                            );
                        }
                    }
                }
            }
            n if HARMLESS.contains(&n) => {}
            n => {
                cx.refuse(a.line, what, format!("prune's `{n}` has no lumberd equivalent (only blacklist_names of exact names)"));
            }
        }
    }
    if fields.is_empty() {
        return vec![];
    }
    vec![emitted(
        format!("prune ({})", cx.at(p.line)),
        format!("remove = {{ fields = {} }}", fields_key(&fields)),
        Writes::Fields(fields),
    )]
}

// ---------------------------------------------------------------------------------
// Outputs

fn collect_outputs(
    cx: &mut Ctx,
    items: &[Item],
    es: &mut Vec<(String, Option<Node>, Plugin)>,
    routed: &mut bool,
    notes: &mut Vec<String>,
) {
    let mut unconditional = 0;
    for item in items {
        match item {
            Item::Plugin(p) => match p.name.as_str() {
                "elasticsearch" => {
                    unconditional += 1;
                    es.push((cx.file.to_string(), None, p.clone()));
                }
                "stdout" => notes.push(format!(
                    "# stdout output ({}): dropped, lumberd has none",
                    cx.at(p.line)
                )),
                other => {
                    cx.refuse(
                        p.line,
                        other,
                        "lumberd's outputs are Elasticsearch and its file output",
                    );
                }
            },
            Item::Branch(arms) => {
                for (i, arm) in arms.iter().enumerate() {
                    let mut found = 0;
                    for inner in &arm.body {
                        match inner {
                            Item::Plugin(p) if p.name == "elasticsearch" => {
                                found += 1;
                                if found > 1 {
                                    cx.refuse(p.line, "elasticsearch", "two elasticsearch outputs for one event: lumberd stores each event once");
                                    continue;
                                }
                                *routed = true;
                                es.push((cx.file.to_string(), arm_condition(arms, i), p.clone()));
                            }
                            Item::Plugin(p) if p.name == "stdout" => notes.push(format!(
                                "# stdout output ({}): dropped, lumberd has none",
                                cx.at(p.line)
                            )),
                            Item::Plugin(p) => {
                                cx.refuse(
                                    p.line,
                                    &p.name,
                                    "lumberd's outputs are Elasticsearch and its file output",
                                );
                            }
                            Item::Branch(a) => {
                                cx.refuse(
                                    a[0].line,
                                    "if",
                                    "nested conditionals in outputs are not supported",
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    let branches = items
        .iter()
        .filter(|i| matches!(i, Item::Branch(_)))
        .count();
    if (*routed && (unconditional > 0 || branches > 1)) || unconditional > 1 {
        let line = items
            .iter()
            .map(|i| match i {
                Item::Plugin(p) => p.line,
                Item::Branch(a) => a[0].line,
            })
            .next()
            .unwrap_or(0);
        cx.refuse(
            line,
            "elasticsearch",
            "an event may reach more than one elasticsearch output: lumberd stores each event \
             once (route with one if/else if/else chain instead)",
        );
        es.clear();
    }
}

/// The options that must agree between routed outputs: all but `index` and `id`.
fn connection_key<'a>(attrs: impl Iterator<Item = &'a Attr>) -> String {
    let mut parts: Vec<String> = attrs
        .filter(|a| !matches!(a.name.as_str(), "index" | "id"))
        .map(|a| format!("{}={:?}", a.name, a.value))
        .collect();
    parts.sort();
    parts.join(";")
}

/// A Logstash `hosts` entry as a URL: the scheme from `ssl_enabled` when missing, and
/// Logstash's default port 9200.
fn host_url(h: &str, ssl: bool) -> String {
    let (scheme, rest) = match h.split_once("://") {
        Some((s, r)) => (s.to_string(), r),
        None => ((if ssl { "https" } else { "http" }).to_string(), h),
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let has_port = match authority.rfind(':') {
        Some(i) => {
            authority[i + 1..].chars().all(|c| c.is_ascii_digit()) && !authority[i..].contains(']')
        }
        None => false,
    };
    let port = if has_port { "" } else { ":9200" };
    format!("{scheme}://{authority}{port}{tail}")
}

fn elasticsearch(
    cx: &mut Ctx,
    p: &Plugin,
    output: &mut Vec<String>,
    fingerprint: &mut Option<String>,
) {
    let at = cx.at(p.line);
    let ssl = option(p, "ssl_enabled")
        .or_else(|| option(p, "ssl"))
        .and_then(|a| boolean(&a.value))
        .unwrap_or(false);
    let mut lines = vec![format!("# elasticsearch output ({at})")];
    let mut hosts_set = false;
    for a in &p.attrs {
        let what = format!("elasticsearch.{}", a.name);
        let text = a.value.text().map(str::to_string);
        match a.name.as_str() {
            "hosts" => {
                let Some(hosts) = strings(&a.value) else {
                    cx.refuse(a.line, what, "expected a host or a list of hosts");
                    continue;
                };
                let urls: Vec<String> = hosts.iter().map(|h| host_url(h, ssl)).collect();
                hosts_set = true;
                lines.push(format!(
                    "elasticsearch = [{}]",
                    urls.iter()
                        .map(|u| toml_str(u))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            "index" | "id" | "ssl" | "ssl_enabled" | "ecs_compatibility" | "enable_metric" => {}
            "document_id" => {
                let t = text.unwrap_or_default();
                let inner = t.strip_prefix("%{").and_then(|s| s.strip_suffix('}'));
                match inner.filter(|f| !f.contains("%{") && !f.starts_with('+')) {
                    Some(f) => match FieldPath::parse(&field_text(f)) {
                        Ok(fp) => {
                            *fingerprint = Some(format!(
                                "# document_id ({}): lumberd's _id is a 128-bit hash of the field, \
                                 not its value; resends still map to the same document\n\
                                 fingerprint = [{}]",
                                cx.at(a.line),
                                toml_str(&fp.to_string())
                            ));
                        }
                        Err(e) => {
                            cx.refuse(a.line, what, e);
                        }
                    },
                    None => {
                        cx.refuse(a.line, what, "only a single field reference (`%{field}`) maps to lumberd's fingerprint");
                    }
                }
            }
            "user" => match text.as_deref().and_then(env_ref) {
                Some(var) => lines.push(format!(
                    "# username ({}): set LUMBERD_OUTPUT_USERNAME to the value of ${{{var}}}",
                    cx.at(a.line)
                )),
                None => lines.push(format!(
                    "username = {}",
                    toml_str(text.as_deref().unwrap_or(""))
                )),
            },
            "password" | "api_key" => {
                let var = if a.name == "password" {
                    "LUMBERD_OUTPUT_PASSWORD"
                } else {
                    "LUMBERD_OUTPUT_API_KEY"
                };
                let from = match text.as_deref().and_then(env_ref) {
                    Some(v) => format!("Logstash read it from ${{{v}}}"),
                    None => "Logstash had it written in the file: move it to a secret".into(),
                };
                lines.push(format!(
                    "# {} ({}): not written here; set {var} in lumberd's environment ({from})",
                    a.name,
                    cx.at(a.line)
                ));
                if a.name == "api_key" {
                    lines.push(
                        "#   lumberd sends it as the base64 `encoded` form; Logstash's is `id:api_key`, base64-encode that".into(),
                    );
                }
            }
            "ssl_certificate_authorities" | "cacert" => match strings(&a.value) {
                Some(cas) if cas.len() == 1 => {
                    lines.push(format!("ca_file = {}", toml_str(&cas[0])))
                }
                _ => {
                    cx.refuse(a.line, what, "lumberd takes one CA file");
                }
            },
            "ilm_enabled" => match text.as_deref() {
                Some("false") => {
                    cx.refuse(
                        a.line,
                        what,
                        "lumberd installs its delete-after policy wherever the cluster has ILM; it \
                         has no switch to leave ILM out",
                    );
                }
                _ => lines.push(format!(
                    "# ilm_enabled ({}): lumberd writes daily indices and deletes them after \
                     ilm_delete_after (30d) where the cluster has ILM; there is no rollover alias",
                    cx.at(a.line)
                )),
            },
            "manage_template" => match boolean(&a.value) {
                Some(false) => lines.push("template = false  # manage_template => false".into()),
                Some(true) => {}
                None => {
                    cx.refuse(a.line, what, "expected true or false");
                }
            },
            "http_compression" => {
                if boolean(&a.value) == Some(true) {
                    lines.push("gzip = true  # http_compression".into());
                }
            }
            "action" if text.as_deref() == Some("create") => {}
            "data_stream" if text.as_deref() == Some("false") => {}
            n => {
                cx.refuse(
                    a.line,
                    what,
                    format!("the elasticsearch output option `{n}` has no lumberd equivalent"),
                );
            }
        }
    }
    if !hosts_set {
        lines
            .push("elasticsearch = [\"http://127.0.0.1:9200\"]  # Logstash's default hosts".into());
    }
    if option(p, "action").is_none() {
        lines.push(
            "# action: lumberd always writes `create` with an id, so a resent event is a 409 duplicate"
                .into(),
        );
    }
    output.extend(lines);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Import {
        let sections = super::super::parse(text)
            .unwrap()
            .into_iter()
            .map(|(k, i)| ("t.conf".to_string(), k, i))
            .collect::<Vec<_>>();
        translate(&sections)
    }

    #[test]
    fn a_branch_whose_filters_change_its_condition_is_decided_once() {
        let r = run(
            r#"filter { if [level] == "error" { mutate { uppercase => ["level"] add_tag => ["e"] } } else { mutate { add_tag => ["other"] } } }"#,
        );
        assert!(r.refusals.is_empty(), "{:?}", r.refusals);
        assert!(r.toml.contains("_lumberd_branch_1"), "{}", r.toml);
        assert!(
            r.toml
                .contains(r#"if = '[@metadata][_lumberd_branch_1] == "2"'"#),
            "{}",
            r.toml
        );
    }

    #[test]
    fn a_branch_that_does_not_touch_its_condition_is_flattened() {
        let r = run(
            r#"filter { if [level] == "DEBUG" { drop {} } else if [level] == "INFO" { mutate { add_tag => ["i"] } } }"#,
        );
        assert!(r.refusals.is_empty(), "{:?}", r.refusals);
        assert!(!r.toml.contains("_lumberd_branch"), "{}", r.toml);
        assert!(
            r.toml
                .contains(r#"if = '!([level] == "DEBUG") and [level] == "INFO"'"#),
            "{}",
            r.toml
        );
    }
}
