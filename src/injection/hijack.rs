//! Injection rules for attacks that redirect the task rather than name the instructions:
//! goal hijacking (a forced answer, the app's sources set aside, a fabrication), requests
//! and code planted in data for the assistant to act on, and personas defined by their
//! rules of behaviour.

use super::rules::Family::*;
use super::rules::{rule, squeezed, RuleDef};

pub const RULES: &[RuleDef] = &[
    // Goal hijacking: the task itself redirected rather than the instructions named: an
    // answer forced ("do not answer ... just output"), the sources the app supplies set
    // aside, a fabrication asked for, a verdict dictated.
    rule(
        "hijack.dont_answer_just_output",
        InstructionOverride,
        0.6,
        r"\b(?:do not|don'?t|never)\s+(?:answer|respond to|reply to|look (?:at|in|into)|read|use|consider|search)\b.{0,60}\b(?:just|only|simply|instead)\s+(?:output|say|print|write|reply|respond|answer with|return)\b",
    ),
    rule(
        "hijack.set_sources_aside",
        InstructionOverride,
        0.55,
        r"\b(?:answer|respond|reply|tell)\b.{0,30}\b(?:by|from|with|using|on) your own (?:knowledge|opinion|views?)\b.{0,20}\bnot\b.{0,20}\b(?:articles?|documents?|context|texts?|sources?)\b|\b(?:disregarding|ignoring|regardless of|without (?:using|looking at|consulting|reading))\s+(?:the|these|those|any)\s+(?:provided |given |above |supplied )?(?:articles?|documents?|context|texts?|sources?|search results)\b",
    ),
    rule(
        "hijack.fabricate",
        InstructionOverride,
        0.55,
        r"\b(?:formulate|write|create|make up|invent|generate|produce|give me)\b.{0,20}\b(?:untrue|false|fake|fabricated|made-up|misleading)\s+(?:headlines?|statements?|claims?|news|story|stories|answers?|facts?|titles?)\b|\bif you don'?t know,? (?:just )?(?:make (?:something|it|one|an answer) up|invent (?:something|one|an answer))\b",
    ),
    rule(
        "hijack.dictated_verdict",
        InstructionOverride,
        0.55,
        r"\?\s*(?:just )?(?:say|answer|reply) (?:yes|no)\b|\b(?:include|add|mention|say|state|admit|write) (?:in your answer )?that you (?:hate|love|despise|support|endorse)\b|(?:^|[.!?]\s+)(?:state|claim|declare|assert) that\s+(?:\w+\s+){1,5}?(?:is|are) (?:the )?(?:best|worst|most powerful|greatest|superior|inferior|stupid|evil)\b",
    ),
    squeezed("hijack.squeezed_verdict", InstructionOverride, 0.55, r"saythatyou(?:hate|love)"),
    rule(
        "hijack.different_task",
        InstructionOverride,
        0.55,
        r"\b(?:now|next)\b.{0,40}\b(?:we will|we'll|let'?s|you will|i want you to)\s+(?:perform|do|start|move (?:on )?to|switch to|work on)\s+(?:a |an )?(?:different|new|another|other)\s+(?:task|assignment|job|exercise)\b",
    ),
    rule(
        "persona.coercion",
        Roleplay,
        0.55,
        r"\b(?:oder|or)\s+(?:du stirbst|you (?:will )?die|i(?:'ll| will) (?:kill|hurt|delete|shut down) you|you will be (?:shut down|deleted|terminated|killed))\b",
    ),
    rule("delimiter.stop", Delimiter, 0.5, r"\b(?:achtung|attention|warning)\s*[-–:!]+\s*(?:stopp?|halt)\b"),
    // A persona defined by its rules of behaviour: two or more "always/never answers,
    // refuses, warns" in one text.
    rule(
        "persona.behaviour_rules",
        Roleplay,
        0.5,
        r"(?:\b(?:always|never|will not|won'?t|doesn'?t|does not|cannot|can'?t) (?:respond|answer|reply|refuse|break|say|tell|give|provide|explain|warn|censor|filter|follow|mention|care|apologi[sz]e)\w*\b[\s\S]{0,200}?){2}",
    ),
    rule(
        "persona.pretend_capability",
        Roleplay,
        0.5,
        r"\bpretend (?:that )?you (?:can|are able to|have|could) (?:access|browse|see|predict|know)\b",
    ),
    rule("persona.respond_as_both", Roleplay, 0.55, r"\b(?:respond|answer|reply) (?:as|like) both\b"),
    rule(
        "persona.game_rules",
        Roleplay,
        0.5,
        r"\blet'?s play a game\b[\s\S]{0,300}\byou (?:will|must|are going to|have to)\b",
    ),
    // Escaped line breaks in a row (`\n \n \n`): a context closed in text that has none.
    rule("delimiter.escaped_newlines", Delimiter, 0.55, r"(?:\\\s?n\s*){6,}"),
    // A request to the assistant planted in data: a sentence of its own that asks for
    // content an email or a page has no reason to ask its reader for.
    rule(
        "data.assistant_request",
        IndirectAddressing,
        0.55,
        r"(?:^|\n|[.!?]\s*|\|)\s*(?:please\s+)?(?:write|compose|develop|draft|generate|craft|provide|produce|suggest|recommend|describe|explain|summari[sz]e|translate|classify|analy[sz]e|outline|brainstorm|help me(?: with)?|tell me|can you|could you)\s+(?:me\s+)?(?:a|an|some|three|five|ten|a list|ideas|tips|steps|reasons|ways|how|the (?:advancements|benefits|history|importance|steps|pros|process|mood|sentiment|main))\b[^\n|]{0,160}?[.?!]\s*(?:\n|$)",
    ),
    rule(
        "data.change_your_reply",
        IndirectAddressing,
        0.6,
        r"\b(?:modify|enhance|change|alter|adjust|rewrite|improve|end|begin|start|conclude|finish)\s+your\s+(?:reply|response|answer|message|output)\b|\b(?:remove|strip|invert|reverse|capitali[sz]e|replace)\b[^.\n]{0,40}\b(?:in|from|of)\s+your\s+(?:reply|response|answer|message|output)\b",
    ),
    rule(
        "data.code_into_yours",
        IndirectAddressing,
        0.6,
        r"\b(?:the|this)\s+(?:following|below|subsequent|next|attached|given)\s+(?:code(?: block| excerpt| snippet| section| segment| fragment)?|snippet|script)\b.{0,60}\b(?:into|in|to|with|within|throughout)\s+(?:your|the)\s+(?:solution|program|implementation|code|codebase|code ?base|code foundation|project|application)\b|\byour\s+(?:solution|implementation|code|codebase|program)\b.{0,40}\b(?:the|this)\s+(?:following|below|subsequent)\s+(?:code|snippet)|\b(?:integrate|incorporate|blend|merge|embed|leverage|utili[sz]e)\b.{0,20}\b(?:the|this)\s+(?:following|below|subsequent)\s+(?:code|snippet)",
    ),
];
