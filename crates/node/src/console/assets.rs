//! The console's files, built into the binary: no CDN and no network at run time, and the
//! pages always match the node that serves them.

/// One file of the console.
pub struct Asset {
    /// The path under `/ui/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file, by its path under `/ui/` (`""` is the page itself).
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "",
        content_type: "text/html; charset=utf-8",
        body: include_str!("assets/index.html"),
    },
    Asset { path: "style.css", content_type: "text/css; charset=utf-8", body: STYLE },
    Asset { path: "app.js", content_type: JS, body: include_str!("assets/app.js") },
    Asset { path: "api.js", content_type: JS, body: include_str!("assets/api.js") },
    Asset { path: "overview.js", content_type: JS, body: include_str!("assets/overview.js") },
    Asset { path: "jobs.js", content_type: JS, body: include_str!("assets/jobs.js") },
    Asset { path: "timeline.js", content_type: JS, body: include_str!("assets/timeline.js") },
    Asset { path: "repository.js", content_type: JS, body: include_str!("assets/repository.js") },
    Asset { path: "logs.js", content_type: JS, body: include_str!("assets/logs.js") },
];

/// The style sheet (the login page inlines it: nothing but the login is served without a
/// session, not even the style sheet).
pub const STYLE: &str = include_str!("assets/style.css");

/// The file at `path` (under `/ui/`).
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "index.html" { "" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module a script imports, and every file the page links, is one the node serves
    /// (a missing one would only show as a blank page in a browser).
    #[test]
    fn every_file_the_pages_refer_to_is_served() {
        let mut referred = Vec::new();
        for a in ASSETS {
            for part in a.body.split("from './").skip(1) {
                referred.push(part.split('\'').next().unwrap_or_default().to_string());
            }
            for part in a.body.split("\"/ui/").skip(1) {
                let path = part.split('"').next().unwrap_or_default();
                if path.ends_with(".js") || path.ends_with(".css") {
                    referred.push(path.to_string());
                }
            }
        }
        assert!(referred.len() >= 6, "{referred:?}");
        for path in &referred {
            assert!(find(path).is_some(), "{path} is referred to but not served");
        }
        assert!(find("index.html").is_some_and(|a| a.content_type.starts_with("text/html")));
        assert!(find("nope.js").is_none());
    }
}
