//! The body of `GET /v1/workspaces/{id}/tree`, built and written without recursion.
//!
//! New writes keep trees within 32 levels, but the database may hold deeper trees written
//! before that rule, and the subtree is whatever the rows say. Recursing once per level
//! (a recursive build, or serde on a nested struct) overflows the stack on a deep enough
//! tree, and a stack overflow aborts the whole process. Here the nodes live in one flat
//! vector, and both the linking and the JSON writing walk it with an explicit stack.

use uuid::Uuid;

use crate::columns::WorkspaceStatus;

struct Node {
    id: Uuid,
    name: String,
    status: WorkspaceStatus,
    /// Indexes into `Tree::nodes`, in the order the rows came.
    children: Vec<usize>,
}

/// A subtree: the root (index 0) and its descendants.
pub(super) struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// Links `rows` (`id, parent_id, name, status`, in the order children are listed)
    /// under the root. A row whose parent is not among them is left out.
    pub fn new(
        root: (Uuid, String, WorkspaceStatus),
        rows: impl IntoIterator<Item = (Uuid, Option<Uuid>, String, WorkspaceStatus)>,
    ) -> Self {
        let (id, name, status) = root;
        let mut nodes = vec![Node { id, name, status, children: Vec::new() }];
        let mut parents = Vec::new();
        for (id, parent, name, status) in rows {
            parents.push(parent);
            nodes.push(Node { id, name, status, children: Vec::new() });
        }
        let index: std::collections::HashMap<Uuid, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        for (offset, parent) in parents.into_iter().enumerate() {
            let child = offset + 1;
            if let Some(&parent) = parent.as_ref().and_then(|p| index.get(p))
                && parent != child
            {
                nodes[parent].children.push(child);
            }
        }
        Self { nodes }
    }

    /// `{id, name, status, children: [...]}`, nested, as JSON. Each node is written at
    /// most once (a node has one parent), so even rows that disagree cannot loop.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.nodes.len() * 96);
        let mut written = vec![false; self.nodes.len()];
        // (node, how many of its children are written)
        let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
        open(&mut out, &self.nodes[0]);
        written[0] = true;
        while let Some((node, next)) = stack.last_mut() {
            match self.nodes[*node].children.get(*next).copied() {
                Some(child) => {
                    *next += 1;
                    if written[child] {
                        continue;
                    }
                    written[child] = true;
                    if out.last() != Some(&b'[') {
                        out.push(b',');
                    }
                    open(&mut out, &self.nodes[child]);
                    stack.push((child, 0));
                }
                None => {
                    out.extend_from_slice(b"]}");
                    stack.pop();
                }
            }
        }
        out
    }
}

/// Writes a node up to the opening bracket of its children.
fn open(out: &mut Vec<u8>, node: &Node) {
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(node.id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
    out.extend_from_slice(b"\",\"name\":");
    string(out, &node.name);
    out.extend_from_slice(b",\"status\":");
    string(out, node.status.as_str());
    out.extend_from_slice(b",\"children\":[");
}

fn string(out: &mut Vec<u8>, value: &str) {
    // Writing a string into a Vec cannot fail; serde_json does the escaping.
    serde_json::to_writer(&mut *out, value).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::super::TreeNode;
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn the_written_json_is_what_serde_writes_for_the_nested_tree() {
        let rows = vec![
            (id(2), Some(id(1)), "A \"quoted\" \\ name".to_owned(), WorkspaceStatus::Active),
            (id(4), Some(id(2)), "Grandchild".to_owned(), WorkspaceStatus::Archived),
            (id(3), Some(id(1)), "B".to_owned(), WorkspaceStatus::Active),
            (id(9), Some(id(8)), "Orphan".to_owned(), WorkspaceStatus::Active),
        ];
        let tree = Tree::new((id(1), "Root".to_owned(), WorkspaceStatus::Active), rows);
        let node = |n: u128, name: &str, status: &str, children: Vec<TreeNode>| TreeNode {
            id: id(n),
            name: name.to_owned(),
            status: status.to_owned(),
            children,
        };
        let expected = node(
            1,
            "Root",
            "active",
            vec![
                node(2, "A \"quoted\" \\ name", "active", vec![node(4, "Grandchild", "archived", vec![])]),
                node(3, "B", "active", vec![]),
            ],
        );
        assert_eq!(String::from_utf8(tree.to_json()).unwrap(), serde_json::to_string(&expected).unwrap());
    }

    #[test]
    fn a_chain_a_hundred_thousand_levels_deep_is_written_without_recursion() {
        const LEVELS: u128 = 100_000;
        let rows = (2..=LEVELS).map(|n| (id(n), Some(id(n - 1)), "n".to_owned(), WorkspaceStatus::Active));
        let json = Tree::new((id(1), "n".to_owned(), WorkspaceStatus::Active), rows).to_json();
        let closing = b"]}".repeat(LEVELS as usize);
        assert!(json.ends_with(&closing));
        assert_eq!(json.iter().filter(|&&b| b == b'{').count(), LEVELS as usize);
    }

    #[test]
    fn rows_that_make_a_cycle_are_written_once_and_never_loop() {
        let rows = vec![
            (id(2), Some(id(3)), "a".to_owned(), WorkspaceStatus::Active),
            (id(3), Some(id(2)), "b".to_owned(), WorkspaceStatus::Active),
            (id(4), Some(id(1)), "c".to_owned(), WorkspaceStatus::Active),
        ];
        let json = Tree::new((id(1), "r".to_owned(), WorkspaceStatus::Active), rows).to_json();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["children"].as_array().unwrap().len(), 1);
    }
}
