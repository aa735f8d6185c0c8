//! Links from each operation that creates a resource to the operations on it, so that a
//! client (or a stateful tester) can go from a `201` to everything the new resource offers.
//!
//! A resource created by `POST <collection>` lives at `<collection>/{id}` (or, for
//! resources created under a parent such as invitations, at `/v1/<kind>/{id}`); its `id` is
//! `$response.body#/id`. Operations filtering by `<kind>_id` (e.g. `organization_id`) are
//! linked the same way.

use serde_json::{Map, Value, json};

pub(super) fn declare(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object() else { return };
    let mut planned: Vec<(String, String, Map<String, Value>)> = Vec::new();
    for (collection, item) in paths {
        if !item["post"]["responses"].get("201").is_some_and(Value::is_object) {
            continue;
        }
        let kind = collection.rsplit('/').next().unwrap_or_default();
        let canonical = format!("/v1/{kind}/");
        let own = format!("{collection}/");
        let filter = format!("{}_id", kind.trim_end_matches('s').replace('-', "_"));
        let mut links = Map::new();
        for (path, target) in paths {
            let parameter = [&own, &canonical].into_iter().find_map(|prefix| {
                let rest = path.strip_prefix(prefix.as_str())?;
                let name = rest.strip_prefix('{')?.split('}').next()?;
                Some((name.to_owned(), "path"))
            });
            for (method, operation) in target.as_object().into_iter().flatten() {
                if !super::METHODS.contains(&method.as_str()) {
                    continue;
                }
                let Some(id) = operation["operationId"].as_str() else { continue };
                let parameter = parameter.clone().or_else(|| {
                    let filters = operation["parameters"].as_array()?;
                    filters
                        .iter()
                        .any(|p| p["in"] == "query" && p["name"] == filter.as_str())
                        .then(|| (filter.clone(), "query"))
                });
                let Some((name, location)) = parameter else { continue };
                links.insert(
                    id.to_owned(),
                    json!({
                        "operationId": id,
                        "parameters": {format!("{location}.{name}"): "$response.body#/id"},
                        "description": format!("The created resource's `id` as `{name}`")
                    }),
                );
            }
        }
        if !links.is_empty() {
            planned.push((collection.clone(), "post".into(), links));
        }
    }
    for (path, method, links) in planned {
        doc["paths"][&path][&method]["responses"]["201"]["links"] = Value::Object(links);
    }
}
