//! The Docker Engine API answers the mapping uses, parsed (the HTTP
//! client over the unix socket is the loader's `docker` module).

use serde::Deserialize;

/// `GET` path listing every container, running or not: one call names
/// them all, and a container being created is already in it (the name is
/// given at create, before runc makes its namespaces at start).
pub const LIST_PATH: &str = "/containers/json?all=1";

/// What the API says about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub id: String,
    /// Without Docker's leading `/`. Untrusted text: escape it for humans.
    pub name: Option<String>,
    /// As the user gave it (`busybox:latest`), or the image id.
    pub image: Option<String>,
}

#[derive(Deserialize)]
struct ListEntry {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Names", default)]
    names: Option<Vec<String>>,
    #[serde(rename = "Image", default)]
    image: Option<String>,
}

/// The body of `GET /containers/json?all=1`.
pub fn parse_list(body: &[u8]) -> Result<Vec<Info>, String> {
    let list: Vec<ListEntry> = serde_json::from_slice(body)
        .map_err(|e| format!("Docker API: unexpected container list: {e}"))?;
    Ok(list
        .into_iter()
        .map(|e| Info {
            id: e.id,
            // Links show up as extra names ("/other/alias"); the primary
            // name has a single leading slash and no other.
            name: e.names.and_then(|names| {
                let pick = names
                    .iter()
                    .find(|n| n.matches('/').count() == 1)
                    .or(names.first())?;
                Some(pick.strip_prefix('/').unwrap_or(pick).to_string())
            }),
            image: e.image.filter(|i| !i.is_empty()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_as_docker_20_10_sends_it() {
        // Trimmed from dockerd 20.10.24's answer in the test VM.
        let body = br#"[{"Id":"1b001ca0020613b7a78776783a4e8c542646ed7c1a1fb6f0c2b8f6a6812e03a3","Names":["/web1"],"Image":"nt-busybox:latest","ImageID":"sha256:74a7","Command":"/bin/sleep 1000","Created":1790000000,"Ports":[],"Labels":{},"State":"running","Status":"Up 1 second","HostConfig":{"NetworkMode":"none"},"NetworkSettings":{"Networks":{"none":{}}},"Mounts":[]},
{"Id":"2222222222222222222222222222222222222222222222222222222222222222","Names":["/db/web_alias","/db"],"Image":"","State":"exited"},
{"Id":"3333333333333333333333333333333333333333333333333333333333333333","Names":null}]"#;
        let list = parse_list(body).unwrap();
        assert_eq!(
            list,
            [
                Info {
                    id: "1b001ca0020613b7a78776783a4e8c542646ed7c1a1fb6f0c2b8f6a6812e03a3".into(),
                    name: Some("web1".into()),
                    image: Some("nt-busybox:latest".into()),
                },
                Info {
                    id: "2".repeat(64),
                    name: Some("db".into()),
                    image: None,
                },
                Info {
                    id: "3".repeat(64),
                    name: None,
                    image: None,
                },
            ]
        );
    }

    #[test]
    fn bad_bodies() {
        assert_eq!(parse_list(b"[]").unwrap(), []);
        let err = parse_list(br#"{"message":"page not found"}"#).unwrap_err();
        assert!(
            err.starts_with("Docker API: unexpected container list: "),
            "{err}"
        );
        assert!(parse_list(b"").is_err());
        assert!(parse_list(br#"[{"Names":["/x"]}]"#).is_err(), "no Id");
    }
}
