//! Keeps `docs/protocol.md` honest: every example frame in it must decode
//! with this crate, and every message kind must have its section and example.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_protocol::{Frame, Message};
use serde_json::Value;

const DOC: &str = include_str!("../../../docs/protocol.md");

/// A fenced ```json block: the line its fence opens on and its text.
struct JsonBlock {
    line: usize,
    text: String,
}

/// Every ```json block in `markdown`, including indented ones (in lists).
fn json_blocks(markdown: &str) -> Vec<JsonBlock> {
    let mut blocks = Vec::new();
    let mut current: Option<JsonBlock> = None;
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        match current.as_mut() {
            None if trimmed == "```json" => {
                current = Some(JsonBlock {
                    line: n + 1,
                    text: String::new(),
                })
            }
            None => {}
            Some(_) if trimmed == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
        }
    }
    assert!(
        current.is_none(),
        "an unterminated ```json block in docs/protocol.md"
    );
    blocks
}

/// The blocks that are frames: JSON objects with a `type` key.
fn example_frames(markdown: &str) -> Vec<(usize, Frame)> {
    json_blocks(markdown)
        .into_iter()
        .filter(|block| {
            let value: Value = serde_json::from_str(&block.text).unwrap_or_else(|e| {
                panic!("docs/protocol.md line {}: not valid JSON: {e}", block.line)
            });
            value.get("type").is_some()
        })
        .map(|block| {
            let frame = Frame::decode(&block.text).unwrap_or_else(|e| {
                panic!(
                    "docs/protocol.md line {}: example does not decode: {e}",
                    block.line
                )
            });
            (block.line, frame)
        })
        .collect()
}

/// The `### `kind`` sections under `## Message kinds`, in document order,
/// each with the text up to the next heading of level 2 or 3.
fn kind_sections(markdown: &str) -> Vec<(String, String)> {
    let start = markdown
        .find("\n## Message kinds")
        .expect("docs/protocol.md has a `## Message kinds` section");
    let rest = &markdown[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    let body = &rest[..end];
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            let kind = heading.trim().trim_matches('`').to_owned();
            sections.push((kind, String::new()));
        } else if let Some((_, text)) = sections.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    sections
}

#[test]
fn every_example_frame_in_the_protocol_doc_decodes_to_a_known_kind() {
    let frames = example_frames(DOC);
    assert!(
        !frames.is_empty(),
        "no example frames found in docs/protocol.md"
    );
    for (line, frame) in &frames {
        assert!(
            !matches!(frame.message, Message::Unknown { .. }),
            "docs/protocol.md line {line}: `{}` is not a kind this crate knows",
            frame.message.kind()
        );
        // And what the doc shows survives a trip through our own encoder.
        assert_eq!(
            &Frame::decode(&frame.encode()).unwrap(),
            frame,
            "docs/protocol.md line {line}: example does not round-trip"
        );
    }
}

#[test]
fn every_message_kind_has_an_example_in_the_protocol_doc() {
    let frames = example_frames(DOC);
    for kind in Message::KINDS {
        assert!(
            frames.iter().any(|(_, f)| f.message.kind() == *kind),
            "docs/protocol.md has no example frame for `{kind}`"
        );
    }
}

#[test]
fn the_protocol_doc_has_one_section_per_kind_in_kinds_order() {
    let sections = kind_sections(DOC);
    let headings: Vec<&str> = sections.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        headings,
        Message::KINDS,
        "kind sections of docs/protocol.md"
    );
}

#[test]
fn each_kind_section_has_exactly_one_example_of_its_own_kind() {
    for (kind, text) in kind_sections(DOC) {
        let frames = example_frames(&text);
        assert_eq!(
            frames.len(),
            1,
            "section `{kind}` of docs/protocol.md should have exactly one example frame"
        );
        assert_eq!(
            frames[0].1.message.kind(),
            kind,
            "the example in section `{kind}` is of another kind"
        );
    }
}

#[test]
fn the_tree_list_examples_show_a_request_and_its_reply_sharing_an_id() {
    let frames = example_frames(DOC);
    let id_of = |kind: &str| {
        frames
            .iter()
            .find(|(_, f)| f.message.kind() == kind)
            .and_then(|(_, f)| f.id.clone())
    };
    let request = id_of("tree.list").expect("the tree.list example has an envelope id");
    assert_eq!(id_of("tree.list.result"), Some(request));
}
