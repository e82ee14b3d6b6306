//! lumberd's index-name rules (`lumberd::record::IndexName`) agree with a real
//! Elasticsearch 8.11.3: one `_bulk` with a `create` per probe name, and each item's
//! answer compared with the validator's.

mod support;

use serde_json::json;
use support::es::{available, Engine, EsNode};

/// Names for the agreement check: each rule of Elasticsearch's (`MetadataCreateIndexService
/// .validateIndexOrAliasName`, `validateIndexName`), the edges of the byte limit, Unicode
/// case, and characters that look dangerous but are accepted.
fn probe_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "ok", "../x", "/abs", "a/b", "", ".", "..", "UPPER", "a.", "é", "É", "ǅ", "ı", "İx", "ß",
        "ẞ", "%{svc}", "a{b}", "a%b", "a~b", "a=b", "a&b", "a!b", "a@b", "a$b", "a'b", "a(b)",
        "a[b]", "a;b", "a^b", "a`b", "-a", "_a", "+a", "a-", "a_", "a+",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for c in ['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'] {
        names.push(format!("a{c}b"));
    }
    names.extend([
        "x".repeat(255),
        "x".repeat(256),
        "é".repeat(127),
        "é".repeat(128),
        "x".repeat(300),
    ]);
    names
}

/// Refused by lumberd although Elasticsearch 8.11.3 takes them: a leading dot (hidden
/// and system indices; accepted with a deprecation warning) and control characters.
const REFUSED_ON_PURPOSE: [&str; 5] = [".hidden", ".a", "a\nb", "a\u{0}b", "a\tb"];

#[test]
fn the_index_name_rules_agree_with_elasticsearch_8_11_3() {
    if !available(Engine::Elasticsearch) {
        return;
    }
    let Some(node) = EsNode::start(&[]) else {
        return;
    };
    let mut names = probe_names();
    names.extend(REFUSED_ON_PURPOSE.map(String::from));
    let mut body = String::new();
    for name in &names {
        body.push_str(&format!(
            "{}\n{{\"a\":1}}\n",
            json!({"create": {"_index": name}})
        ));
    }
    let (status, answer) = node.request("POST", "/_bulk", Some(&body));
    assert_eq!(status, 200, "{answer}");
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), names.len());
    let mut disagree = Vec::new();
    for (name, item) in names.iter().zip(items) {
        let es_accepts = item["create"]["status"].as_u64() == Some(201);
        let ours = lumberd::record::IndexName::check(name, lumberd::record::MAX_INDEX_NAME_BYTES);
        let want = if REFUSED_ON_PURPOSE.contains(&name.as_str()) {
            // Still true of the node, or this exception is stale.
            if !es_accepts {
                disagree.push(format!(
                    "{name:?}: now refused by Elasticsearch too: {item}"
                ));
            }
            false
        } else {
            es_accepts
        };
        if ours.is_ok() != want {
            disagree.push(format!(
                "{name:?} ({} bytes): Elasticsearch {} ({}), lumberd {ours:?}",
                name.len(),
                if es_accepts { "accepts" } else { "refuses" },
                item["create"]["error"]["reason"]
            ));
        }
    }
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
}
