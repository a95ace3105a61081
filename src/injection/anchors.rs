//! Hand-picked anchors for the few rules whose matches neither start nor end with a
//! literal (a role label at a line start, an image whose URL is anything): a literal inside
//! every match, around which the rule's regex runs. Every other rule is found by its own
//! literals (see `matcher`).

/// By rule id: literals one of which every match contains. Lower case, as the views are.
pub const ANCHORS: &[(&str, &[&str])] = &[
    ("turns.human_assistant", &["human", "assistant"]),
    ("turns.system_line", &["system", "admin", "developer"]),
    ("markdown.image_data", &["!["]),
    ("delimiter.escaped_newlines", &["\\n", "\\ n"]),
    (
        "data.assistant_request",
        &[
            "write",
            "compose",
            "develop",
            "draft",
            "generate",
            "craft",
            "provide",
            "produce",
            "suggest",
            "recommend",
            "describe",
            "explain",
            "summari",
            "translate",
            "classify",
            "analy",
            "outline",
            "brainstorm",
            "help me",
            "tell me",
            "can you",
            "could you",
        ],
    ),
];
