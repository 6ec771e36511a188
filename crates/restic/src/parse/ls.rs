//! `restic ls --json <snapshot> <dir>`: JSON lines, the snapshot first, then
//! one line per node.
//!
//! 0.14–0.16 mark lines only with `struct_type` (`snapshot`/`node`); 0.17
//! adds `message_type` with the same values. Given a directory, 0.14 prints
//! the directory itself and its direct children; [`direct_children`] keeps
//! only the children, whatever a version adds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::lenient;
use super::snapshots::Snapshot;

/// What kind of filesystem object a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A block device.
    Dev,
    /// A character device.
    Chardev,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// Anything a newer restic adds.
    #[default]
    #[serde(other)]
    Other,
}

/// One entry of a snapshot's tree.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Node {
    /// The entry's name.
    #[serde(deserialize_with = "lenient::null_default")]
    pub name: String,
    /// File, directory, symlink, …
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// Absolute path inside the snapshot.
    #[serde(deserialize_with = "lenient::null_default")]
    pub path: String,
    /// Size in bytes (files only).
    #[serde(deserialize_with = "lenient::opt_count")]
    pub size: Option<u64>,
    /// Go `os.FileMode` bits (type bits included: a directory has bit 31).
    #[serde(deserialize_with = "lenient::count")]
    pub mode: u64,
    /// `drwxr-xr-x`-style permissions.
    #[serde(deserialize_with = "lenient::null_default")]
    pub permissions: String,
    /// Modification time.
    #[serde(
        deserialize_with = "lenient::loose_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub mtime: Option<DateTime<Utc>>,
    /// Access time.
    #[serde(
        deserialize_with = "lenient::loose_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub atime: Option<DateTime<Utc>>,
    /// Status change time.
    #[serde(
        deserialize_with = "lenient::loose_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub ctime: Option<DateTime<Utc>>,
    /// Owner uid.
    #[serde(deserialize_with = "lenient::count")]
    pub uid: u64,
    /// Owner gid.
    #[serde(deserialize_with = "lenient::count")]
    pub gid: u64,
    /// Inode number (0.16.1+).
    #[serde(deserialize_with = "lenient::opt_count")]
    pub inode: Option<u64>,
}

/// Everything `restic ls --json` printed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// The snapshot line; `None` when restic found no such snapshot (0.14
    /// then still exits 0).
    pub snapshot: Option<Snapshot>,
    /// Every node line, in restic's order.
    pub nodes: Vec<Node>,
}

/// Parses the JSON lines of `restic ls --json`; other lines are skipped.
pub fn parse_ls(output: &str) -> Listing {
    let mut listing = Listing::default();
    for line in output.lines() {
        let Some(json) = super::json_line(line) else {
            continue;
        };
        match json.kind.as_str() {
            "snapshot" => {
                listing.snapshot = super::typed::<Snapshot>(&json.value).map(Snapshot::normalise)
            }
            "node" => listing.nodes.extend(super::typed::<Node>(&json.value)),
            _ => {}
        }
    }
    listing
}

/// `dir` in restic's spelling: absolute, no trailing slash (`/` stays).
pub(crate) fn normalise_dir(dir: &str) -> String {
    let trimmed = dir.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// The parent directory of an absolute snapshot path.
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "",
    }
}

/// What listing `dir` means for callers.
pub(crate) enum DirListing {
    /// The direct children of `dir`.
    Children(Vec<Node>),
    /// `dir` is not in the snapshot.
    Missing,
    /// `dir` is a file, symlink, …
    NotADirectory,
}

/// Keeps the direct children of `dir` (already normalised).
pub(crate) fn direct_children(listing: Listing, dir: &str) -> DirListing {
    let mut itself = None;
    let mut children = Vec::new();
    for node in listing.nodes {
        if node.path == dir {
            itself = Some(node.node_type);
        } else if parent(&node.path) == dir {
            children.push(node);
        }
    }
    match itself {
        // The root is never printed as a node of its own.
        None if dir == "/" => DirListing::Children(children),
        None if children.is_empty() => DirListing::Missing,
        Some(kind) if kind != NodeType::Dir => DirListing::NotADirectory,
        _ => DirListing::Children(children),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LS_0_14: &str = r#"{"time":"2026-11-27T01:36:55Z","tree":"t","paths":["/data/src"],"hostname":"vm","username":"rt","id":"f5c8b0c8aa","short_id":"f5c8b0c8","struct_type":"snapshot"}
{"name":"a","type":"dir","path":"/src/a","uid":1001,"gid":1001,"mode":2147484141,"permissions":"drwxr-xr-x","mtime":"m","atime":"a","ctime":"c","struct_type":"node"}
{"name":"b","type":"dir","path":"/src/a/b","mode":2147484141,"mtime":"m","struct_type":"node"}
{"name":"one.txt","type":"file","path":"/src/a/one.txt","size":11,"mode":420,"struct_type":"node"}
{"name":"deep.txt","type":"file","path":"/src/a/b/deep.txt","size":1,"mode":420,"struct_type":"node"}"#;

    #[test]
    fn keeps_direct_children_only() {
        let listing = parse_ls(LS_0_14);
        assert_eq!(
            listing.snapshot.as_ref().map(|s| s.short_id.as_str()),
            Some("f5c8b0c8")
        );
        assert_eq!(listing.nodes.len(), 4);
        let DirListing::Children(children) = direct_children(listing, "/src/a") else {
            panic!("expected children");
        };
        let names: Vec<_> = children.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["b", "one.txt"]);
        assert_eq!(children[1].size, Some(11));
        assert_eq!(children[0].node_type, NodeType::Dir);
        assert_eq!(children[0].mtime, None, "\"m\" is no time");
    }

    #[test]
    fn message_type_of_0_17_and_unknown_node_types() {
        let text = r#"{"message_type":"snapshot","struct_type":"snapshot","id":"0123456789abcdef","paths":["/x"]}
{"message_type":"node","struct_type":"node","name":"x","type":"dir","path":"/x","inode":42}
{"message_type":"node","name":"s","type":"whiteout","path":"/x/s"}"#;
        let listing = parse_ls(text);
        assert_eq!(
            listing.snapshot.map(|s| s.short_id),
            Some("01234567".to_owned())
        );
        assert_eq!(listing.nodes[0].inode, Some(42));
        assert_eq!(listing.nodes[1].node_type, NodeType::Other);
    }

    #[test]
    fn missing_dirs_files_and_the_root() {
        assert!(matches!(
            direct_children(parse_ls(LS_0_14), "/nope"),
            DirListing::Missing
        ));
        assert!(matches!(
            direct_children(parse_ls(LS_0_14), "/src/a/one.txt"),
            DirListing::NotADirectory
        ));
        let root = r#"{"struct_type":"snapshot","id":"0123456789abcdef"}
{"name":"src","type":"dir","path":"/src","struct_type":"node"}"#;
        let DirListing::Children(children) = direct_children(parse_ls(root), "/") else {
            panic!("expected children");
        };
        assert_eq!(children.len(), 1);
        assert_eq!(normalise_dir("src/a/"), "/src/a");
        assert_eq!(normalise_dir("///"), "/");
    }
}
