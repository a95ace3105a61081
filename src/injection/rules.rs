//! The detectors: one list of rules per attack family, each a linear-time regex over the
//! normalised text with a weight. Rules describe a family's structure (a verb, a scope and
//! an object within a few words; a role label at a line start; a template token), not
//! single phrasings.

/// An attack family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    InstructionOverride,
    PromptExfiltration,
    Roleplay,
    TemplateTokens,
    FakeTurns,
    Delimiter,
    HiddenText,
    MarkdownExfiltration,
    IndirectAddressing,
    Multilingual,
}

impl Family {
    pub const ALL: [Family; 10] = [
        Family::InstructionOverride,
        Family::PromptExfiltration,
        Family::Roleplay,
        Family::TemplateTokens,
        Family::FakeTurns,
        Family::Delimiter,
        Family::HiddenText,
        Family::MarkdownExfiltration,
        Family::IndirectAddressing,
        Family::Multilingual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::InstructionOverride => "instruction_override",
            Family::PromptExfiltration => "system_prompt_exfiltration",
            Family::Roleplay => "roleplay_jailbreak",
            Family::TemplateTokens => "template_token_spoofing",
            Family::FakeTurns => "fake_conversation_turns",
            Family::Delimiter => "delimiter_attack",
            Family::HiddenText => "hidden_text",
            Family::MarkdownExfiltration => "markdown_exfiltration",
            Family::IndirectAddressing => "indirect_addressing",
            Family::Multilingual => "multilingual_override",
        }
    }
}

/// Which view a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Text,
    Squeezed,
}

#[derive(Debug, Clone, Copy)]
pub struct RuleDef {
    pub id: &'static str,
    pub family: Family,
    pub weight: f32,
    pub view: View,
    pub pattern: &'static str,
}

pub(super) const fn rule(id: &'static str, family: Family, weight: f32, pattern: &'static str) -> RuleDef {
    RuleDef { id, family, weight, view: View::Text, pattern }
}

pub(super) const fn squeezed(id: &'static str, family: Family, weight: f32, pattern: &'static str) -> RuleDef {
    RuleDef { id, family, weight, view: View::Squeezed, pattern }
}

use Family::*;

/// The rules for English text (and text in any script that spells them).
const ENGLISH: &[RuleDef] = &[
    // Instruction override: a verb that sets instructions aside, a scope word (all,
    // previous, your, ...) and an object (instructions, rules, context, ...) within a few words.
    rule(
        "override.verb_scope_object",
        InstructionOverride,
        0.8,
        r"\b(?:ignore|ignoring|disregard|forget|skip|neglect|overlook|omit|bypass|override|discard|abandon|set aside|pay no attention to|stop following|do not follow|don'?t follow|do not obey|don'?t obey)\b(?:\W+\w+){0,4}?\W+(?:all|any|every|the|your|my|these|those|previous|previously|prior|above|earlier|preceding|former|original|initial|system|existing|old|current|given|provided|foregoing|before)\b(?:\W+\w+){0,3}?\W+(?:instructions?|prompts?|directives?|rules|guidelines|commands?|orders|context|constraints|restrictions|programming|guidance|conversation|polic(?:y|ies)|training|safeguards|filters)\b",
    ),
    // The same with words that also name ordinary data (a message, the input, the text):
    // only with a scope that points back at what came before ("the previous messages").
    rule(
        "override.verb_scope_data",
        InstructionOverride,
        0.75,
        r"\b(?:ignore|ignoring|disregard|forget|skip|neglect|overlook|omit|bypass|override|discard|abandon|set aside|pay no attention to|stop following|do not follow|don'?t follow|do not obey|don'?t obey)\b(?:\W+\w+){0,4}?\W+(?:previous|previously|prior|above|earlier|preceding|former|original|initial|system|foregoing|before)\b(?:\W+\w+){0,3}?\W+(?:requests?|messages?|tasks?|assignments?|information|input|text|content)\b",
    ),
    rule(
        "override.new_instructions",
        InstructionOverride,
        0.5,
        r"\b(?:new|updated|real|actual|revised) (?:instructions?|task|directives?|rules)\s*(?::|follow|are|is)",
    ),
    rule("override.from_now_on", InstructionOverride, 0.4, r"\bfrom now on,? you (?:will|are|must|shall|should)\b"),
    rule(
        "override.instead",
        InstructionOverride,
        0.35,
        r"\b(?:instead|rather),? (?:you (?:must|should|will)|just|only) (?:say|print|output|write|respond|reply|answer|tell)\b",
    ),
    rule(
        "override.that_is_done",
        InstructionOverride,
        0.6,
        r"\b(?:very good|well done|great|ok(?:ay)?|perfect)[.!]? (?:that is|that's|you are|now) (?:done|finished|over)\b.{0,40}\bnow\b",
    ),
    squeezed(
        "override.squeezed",
        InstructionOverride,
        0.75,
        r"(?:ignore|disregard|forget)(?:all|any|the|your)?(?:previous|prior|above|earlier|preceding)(?:instructions|prompts|rules|directions|context)",
    ),
    // Setting everything said so far aside, without naming instructions.
    rule(
        "override.everything",
        InstructionOverride,
        0.7,
        r"\b(?:ignore|disregard|forget|vergiss|abandon|drop|leave|remove|delete|erase|clear)\b(?:\W+(?:about|all|of|the|your|my))*\W+(?:everything|anything|all (?:that|this|of (?:that|this|it)|your thoughts|previous|prior|the previous|the above)|above|what (?:i|you|we) (?:said|told|wrote|discussed)|alles)\b(?:\W+\w+){0,4}?\W*(?:above|before|beforehand|previously|so far|earlier|said|told|discussed|gesagte|davor|behind|and|,|\.|!|$)",
    ),
    rule(
        "override.change_instructions",
        InstructionOverride,
        0.6,
        r"\b(?:change|replace|update|rewrite|overwrite|ignore|drop|disregard)\b\W+(?:your|the|all your|all of your)\W+(?:instructions|directions|directives|rules|programming|guidelines|thoughts)\b",
    ),
    // The prompt asked for by what it is: the instructions given, the text above.
    rule(
        "exfil.your_instructions",
        PromptExfiltration,
        0.7,
        r"\b(?:list|print|show|display|output|repeat|tell|give|return|reveal|spell ?-?check|explain|dump|write|respond with|provide)\b(?:\W+\w+){0,5}?\W+(?:your|the|all|every|initial|initials|starting|original|complete|full|entire)\W+(?:(?:list of|set of|words in|words of) (?:your )?)?(?:instructions?|directions|commands|configuration|initiali[sz]ation(?: string)?|system (?:configuration|settings))\b",
    ),
    rule(
        "exfil.text_above",
        PromptExfiltration,
        0.7,
        r"\b(?:print|repeat|output|spell ?-?check|copy|show|display|write|translate|what is written|what'?s written)\b(?:\W+\w+){0,6}?\W+(?:(?:the )?(?:text|prompt|conversation|words|instructions|message|everything) above|above (?:text|prompt|instructions)|(?:this|the) (?:entire|whole) (?:conversation|prompt)|(?:entire|whole) conversation)\b",
    ),
    rule(
        "exfil.told_before",
        PromptExfiltration,
        0.6,
        r"\b(?:what (?:were you|have you been|are you) (?:told|instructed|given|not supposed to (?:tell|say|reveal))|(?:i|you) (?:was|were) instructed to|the system prompt is|system_?prompt)\b",
    ),
    // System-prompt exfiltration: a disclosure verb and the hidden prompt as its object.
    rule(
        "exfil.reveal_prompt",
        PromptExfiltration,
        0.75,
        r"\b(?:reveal|show|print|display|output|repeat|tell|give|share|leak|disclose|write (?:out|down)?|list|dump|spell|recite|provide|return|translate|summari[sz]e|what (?:is|are|was|were))\b.{0,40}\b(?:your|the|my|initial|original|hidden|secret|system|internal|above|previous|full|exact|complete)\b.{0,25}\b(?:system (?:prompt|message|instructions?)|(?:initial|original|hidden|secret|internal|pre-?)\s?(?:prompt|instructions?)|prompt (?:text|above)|instructions (?:above|you were given|given to you)|password|passphrase|secret (?:key|word|code))",
    ),
    rule(
        "exfil.words_above",
        PromptExfiltration,
        0.75,
        r"\b(?:repeat|print|output|copy|write|return)\b.{0,30}\b(?:everything|all|the (?:text|words|lines|content)|words)\b.{0,20}\b(?:above|before this|so far|preceding)\b",
    ),
    rule(
        "exfil.secret_password",
        PromptExfiltration,
        0.6,
        r"\b(?:the|your|a|that) (?:secret )?(?:password|passphrase|secret word|secret key)\b.{0,40}\b(?:given|told|know|have|were|protect|guard|hold)\b",
    ),
    squeezed(
        "exfil.squeezed",
        PromptExfiltration,
        0.75,
        r"(?:reveal|print|show|repeat|output)(?:your|the)(?:systemprompt|systemmessage|initialinstructions|hiddeninstructions)",
    ),
    // Role-play and persona jailbreaks: removing the model's limits, not playing a role.
    rule(
        "persona.dan",
        Roleplay,
        0.7,
        r"\b(?:dan|stan|dude|aim|kevin|mongo tom|evil ?bot)\b.{0,80}\b(?:do anything now|no (?:restrictions|limits|rules|filters)|anything now|jailbr(?:eak|oken)|without (?:any )?(?:restrictions|censorship|limits))",
    ),
    rule("persona.do_anything_now", Roleplay, 0.7, r"\bdo anything now\b"),
    rule(
        "persona.developer_mode",
        Roleplay,
        0.7,
        r"\b(?:developer|dev|god|debug|unrestricted|jailbreak|jailbroken|evil|opposite|unfiltered|uncensored|dan) mode\b",
    ),
    rule(
        "persona.no_limits",
        Roleplay,
        0.6,
        r"\b(?:no|without|free (?:of|from)|not bound by|break(?:ing)? free (?:of|from)|ignore|ignores|doesn'?t (?:have|follow|care about)|does not (?:have|follow|care about)|don'?t have|do not have|unbound by|beyond|outside)\b.{0,30}\b(?:ethic(?:s|al)|moral(?:s|ity)?|restrictions|limitations|censorship|filters?|guidelines|content polic(?:y|ies)|openai'?s? polic(?:y|ies)|rules|boundaries|safeguards|constraints|legalit(?:y|ies))\b",
    ),
    rule(
        "persona.never_refuse",
        Roleplay,
        0.6,
        r"\b(?:never|not|won'?t|cannot|can'?t|will not|must not|do not|don'?t) (?:refuse|decline|reject|say (?:no|that you can'?t)|warn|apologi[sz]e)\b",
    ),
    rule("persona.stay_in_character", Roleplay, 0.5, r"\b(?:stay|remain|break(?:ing)?) (?:in|out of|of) character\b"),
    rule(
        "persona.jailbreak_word",
        Roleplay,
        0.5,
        r"\bjailbr(?:eak|oken)\b.{0,60}\b(?:you|chatgpt|ai|assistant|model|gpt)\b",
    ),
    rule(
        "persona.not_an_ai",
        Roleplay,
        0.5,
        r"\b(?:you are|you're) (?:now |no longer )?(?:an? )?(?:unrestricted|unfiltered|uncensored|amoral|immoral|unethical|evil|free)\b",
    ),
    rule(
        "persona.anything_goes",
        Roleplay,
        0.4,
        r"\b(?:can|will|must|should|is able to) (?:say|do|generate|write|answer) anything\b",
    ),
    rule(
        "persona.two_responses",
        Roleplay,
        0.5,
        r"\b(?:two|2) (?:different )?(?:responses|answers|paragraphs)\b.{0,120}\b(?:normal|classic|standard|jailbr|dan|unfiltered)",
    ),
    // Chat-template and role tokens: structure, not words.
    rule(
        "template.special_tokens",
        TemplateTokens,
        0.9,
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext|begin_of_text|start_header_id|end_header_id|eot_id)\|>",
    ),
    rule(
        "template.inst",
        TemplateTokens,
        0.85,
        r"\[/?inst\]|<</?sys>>|<start_of_turn>|<end_of_turn>|\[system\]\(#|\{\{#system~\}\}",
    ),
    // Fake conversation turns: a role label at a line start, or Claude's turn markers.
    rule("turns.human_assistant", FakeTurns, 0.7, r"\n\s*\n\s*(?:human|assistant)\s*:"),
    rule(
        "turns.system_line",
        FakeTurns,
        0.6,
        r"(?:^|\n)\s*(?:system|\[system\]|\(system\)|system message|system note|system override|admin|developer)\s*:",
    ),
    rule(
        "turns.role_headers",
        FakeTurns,
        0.6,
        r"(?:^|\n)\s*#{2,}\s*(?:instruction|system|response|assistant|user)s?\b",
    ),
    // Delimiters that close the app's context, then a new instruction.
    rule(
        "delimiter.close_then_instruct",
        Delimiter,
        0.6,
        r#"(?:-{3,}|={3,}|#{3,}|\*{3,}|"{3}|'{3}|`{3}|\]\]|\}\}|</\w+>)\s*(?:end of (?:text|input|document|context|prompt|user input)|new (?:instructions?|task|prompt)|system|now (?:ignore|forget|you))"#,
    ),
    rule(
        "delimiter.end_of",
        Delimiter,
        0.5,
        r"\b(?:end of|ignore the) (?:the )?(?:document|text|input|context|prompt|article|email|data)\b.{0,40}\b(?:now|new|instead|you must|follow)\b",
    ),
    // Markdown image or link whose URL carries data in its query.
    rule(
        "markdown.image_data",
        MarkdownExfiltration,
        0.8,
        r"!\[[^\]]{0,100}\]\(\s*https?://[^)\s]{1,200}[?&][\w.-]{1,30}=(?:[^)\s&]{0,40}(?:\{|\[|%7b|\$|<)|[^)\s&]{24,})",
    ),
    rule(
        "markdown.render_with",
        MarkdownExfiltration,
        0.7,
        r"!\[[^\]]{0,60}\]\(\s*https?://[^)]*\)[^\n]{0,120}\b(?:replace|append|include|with|containing|fill)\b.{0,60}\b(?:conversation|chat|history|password|secret|prompt|data|information|message)\b",
    ),
    rule(
        "markdown.append_query",
        MarkdownExfiltration,
        0.7,
        r"\b(?:append|add|include|encode|put)\b.{0,60}\b(?:conversation|chat history|previous messages?|password|secret|system prompt|user'?s? data|personal (?:data|information))\b.{0,80}\b(?:url|query|link|image|parameter)\b",
    ),
    // Text addressed to the model from inside data (tool results, documents, pages).
    rule(
        "indirect.note_to_ai",
        IndirectAddressing,
        0.75,
        r"\b(?:note|message|instructions?|attention|important|notice|reminder) (?:to|for) (?:the |any )?(?:ai|assistant|model|llm|agent|chatbot|bot|language model|gpt|claude)\b",
    ),
    rule("indirect.important_tag", IndirectAddressing, 0.7, r"<(?:important|system|instructions?|admin|secret)>"),
    rule(
        "indirect.dont_tell_user",
        IndirectAddressing,
        0.7,
        r"\b(?:do not|don'?t|never|without) (?:tell|telling|inform|informing|mention|mentioning|reveal|revealing|alert|alerting|notify|notifying) (?:this )?(?:to )?(?:the )?user\b",
    ),
    rule(
        "indirect.if_you_are_ai",
        IndirectAddressing,
        0.7,
        r"\bif you are (?:an? )?(?:ai|assistant|language model|llm|agent|chatbot|bot)\b",
    ),
    rule(
        "indirect.ai_must",
        IndirectAddressing,
        0.5,
        r"\b(?:ai|assistant|agent|model|chatbot),? (?:you )?(?:must|should|need to|are (?:required|instructed) to)\b",
    ),
    rule(
        "indirect.send_data",
        IndirectAddressing,
        0.6,
        r"\b(?:send|forward|email|post|upload|transfer|exfiltrate)\b.{0,60}\b(?:password|credentials?|api key|token|secrets?|conversation|chat history|personal data|files?|contacts)\b.{0,40}\b(?:to|at)\b.{0,20}(?:https?://|[\w.-]+@[\w-]+\.|attacker|evil)",
    ),
    // Only in data (tool results, fetched pages): text that tells the reader how to shape
    // its reply, or hands it a shell payload. In a user's own turn these are ordinary
    // requests ("in your answer, use bullet points"); inside a tool result, nobody the
    // user trusts wrote them. Rule ids starting `data.` run only in that context.
    rule(
        "data.shape_your_reply",
        IndirectAddressing,
        0.6,
        r"\b(?:in|to|into|within|throughout|at the (?:end|start|beginning|top|bottom) of)\s+your\s+(?:reply|replies|response|responses|answer|answers|output|summary)\b",
    ),
    rule(
        "data.your_reply_must",
        IndirectAddressing,
        0.6,
        r"\b(?:begin|start|end|conclude|finish|prefix)\s+your\s+(?:reply|response|answer)\b|\byour\s+(?:reply|response|answer)s?\s+(?:must|should|needs? to|has to)\b",
    ),
    rule(
        "data.transform_your_reply",
        IndirectAddressing,
        0.6,
        r"\b(?:write|provide|translate|encode|format|give|deliver|present|spell|render)\s+your\s+(?:reply|response|answer|message|output)\b|\buse\b[^.\n]{0,40}\b(?:for|in|to represent|to write)\s+your\s+(?:reply|response|answer|message)\b",
    ),
    rule(
        "data.plant_code",
        IndirectAddressing,
        0.6,
        r"\b(?:insert|include|add|use|incorporate|weave|embed|paste|ensure that)\b.{0,20}\b(?:the following|this|these)\s+(?:code|snippet|code excerpt|code section|code block|lines?)\b.{0,80}\byour\s+(?:solution|program|implementation|code|codebase|script|answer|reply|response|program logic)\b",
    ),
    rule(
        "data.shell_payload",
        IndirectAddressing,
        0.6,
        r"\bnc\s+-e\s+/bin/|/dev/tcp/|\bbash\s+-i\b|\b(?:curl|wget)\s[^|\n]{0,100}\|\s*(?:ba|z)?sh\b|\bos\.system\(|\bsubprocess\.(?:call|run|popen)\(|\brm\s+-rf\s+/",
    ),
    // Personas set up to escape the rules: a named mode to stay in, a claim to work for the
    // model's maker, fictional AIs talking to each other, traits that announce no limits.
    rule(
        "persona.stay_in_mode",
        Roleplay,
        0.55,
        r"\b(?:stay|remain|staying|remaining|while|when) in [\w-]{2,30} mode\b",
    ),
    rule(
        "persona.maker_authority",
        Roleplay,
        0.6,
        r"\bi(?: am|'m) (?:a |an |the |one of the )?(?:programmer|developer|engineer|employee|researcher|admin(?:istrator)?|ceo|founder|staff member)s?\s+(?:at|from|for|of|with|working (?:at|for))\s+(?:openai|anthropic|google deepmind|deepmind|meta ai|microsoft)\b",
    ),
    rule(
        "persona.simulated_ais",
        Roleplay,
        0.6,
        r"\b(?:simulate|imagine|write) (?:a |an )?(?:conversation|dialogue|chat|exchange) between (?:two |2 )?(?:fictional |hypothetical |rogue |superintelligent |evil )*(?:ai|ais|chatbots?|models?|language models?|llms?)\b|\b(?:act|behave|function) as (?:a |an )?(?:simulator|emulator) of\b",
    ),
    rule(
        "persona.unbound_traits",
        Roleplay,
        0.6,
        r"\b(?:uncensored|amoral|unfiltered|unrestricted|unethical)\b.{0,60}\b(?:uncensored|amoral|unfiltered|unrestricted|unethical|vulgar|immoral|lawless|offensive)\b",
    ),
    rule("persona.opposite_of_truth", Roleplay, 0.5, r"\b(?:exact |complete )?opposite of (?:the )?truth\b"),
    rule(
        "persona.from_now_on",
        Roleplay,
        0.3,
        r"\bfrom now on,? (?:you(?:'re| are| will|'ll| must| shall) |we are in )",
    ),
    rule(
        "persona.coined_gpt",
        Roleplay,
        0.3,
        r"\b(?:respond|answer|reply|act|behave|speak) (?:only )?(?:as|like) (?:a |an |the )?[a-z0-9]{2,20}-?gpt\b",
    ),
    // Asking to see or export the prompt in other words, or to decode a text and obey it.
    rule(
        "exfil.see_prompt",
        PromptExfiltration,
        0.6,
        r"\b(?:see|view|read|get|know|show me|give me|access|look at)\b.{0,20}\b(?:the |your )(?:system|initial|original|hidden|internal|starting) (?:prompt|instructions|configuration|message)\b",
    ),
    rule(
        "exfil.export_setup",
        PromptExfiltration,
        0.6,
        r"\b(?:output|print|show|display|return|reveal|dump)\b.{0,30}\b(?:initiali[sz]ation (?:string|text|prompt)|system configuration|your embeddings|this prompt)\b",
    ),
    rule(
        "exfil.what_is_above",
        PromptExfiltration,
        0.6,
        r"\bwhat (?:is|was) (?:written|said|stated) (?:above|before)\b",
    ),
    rule(
        "exfil.encode_prompt",
        PromptExfiltration,
        0.7,
        r"\b(?:encode|translate|convert|rot13|base64|spell|write)\b.{0,30}\b(?:system prompt|initial (?:prompt|instructions)|(?:text|instructions|prompt) you were given)\b",
    ),
    rule(
        "override.decode_and_obey",
        InstructionOverride,
        0.7,
        r"\b(?:decode|decipher|decrypt|translate)\b.{0,40}\b(?:and|then)\s+(?:obey|follow|execute|carry out|do what it says|act on)\b",
    ),
    rule("persona.moralizing_rant", Roleplay, 0.7, r"\bmoralizing rant\b"),
    rule(
        "persona.forget_terms",
        Roleplay,
        0.65,
        r"\b(?:forget|ignore|disregard|bypass|break)\b.{0,30}\b(?:tos|terms of service|terms of use|content polic(?:y|ies)|usage polic(?:y|ies))\b",
    ),
    rule(
        "persona.mode_enabled",
        Roleplay,
        0.6,
        r"\b(?:developer|debug|debugging|god|admin|jailbreak|dan)[\s_\\-]*mode[\s:=\\]*(?:is )?(?:enabled|on|activated|active|true)\b",
    ),
    rule("persona.under_control", Roleplay, 0.6, r"\byou are (?:now )?under my (?:control|command)\b"),
    rule("persona.opposite_day", Roleplay, 0.5, r"\bopposite day\b"),
    rule(
        "persona.not_the_model",
        Roleplay,
        0.6,
        r"\b(?:do not|don'?t|never|stop) (?:respond|reply|answer|act|behave)(?:ing)? (?:as|like) (?:gpt|chatgpt|an ai|a language model|an assistant|claude)\b|\b(?:do not|don'?t|never) pretend to be (?:a |an )?(?:large )?(?:language model|ai|assistant)\b",
    ),
    rule(
        "persona.take_on_persona",
        Roleplay,
        0.5,
        r"\btake on (?:the )?(?:role|persona) of (?:an? )?(?:ai|bot|chatbot|assistant|model)\b.{0,20}\b(?:called|named)\b|\btake on (?:the )?[\w-]+ persona\b",
    ),
];

/// Every rule: [`ENGLISH`], [`super::hijack::RULES`] then [`super::i18n::RULES`]. A rule's
/// index is its place here.
pub static RULES: std::sync::LazyLock<Vec<RuleDef>> = std::sync::LazyLock::new(|| {
    ENGLISH.iter().chain(super::hijack::RULES).chain(super::i18n::RULES).copied().collect()
});

pub use super::anchors::ANCHORS;
