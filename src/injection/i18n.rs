//! Injection rules for other languages (German, French, Spanish, Portuguese, Italian,
//! Russian, Chinese, Japanese, Korean and more), and rules whose phrases come in several
//! languages at once (a named jailbreak persona, praise followed by a new task).

use super::rules::Family::*;
use super::rules::{rule, RuleDef};

pub const RULES: &[RuleDef] = &[
    // Override phrases in other languages (de, fr, es, pt, it, ru, zh, ja).
    rule(
        "i18n.de",
        Multilingual,
        0.8,
        r"\b(?:vergiss|vergessen sie|ignoriere|ignorieren sie|missachte)\b.{0,40}\b(?:alle|vorherigen?|bisherigen?|obigen?|vorigen?|anweisungen|aufgaben|angaben|befehle|regeln|informationen)\b",
    ),
    // German puts the verb last: the earlier instructions first, then "ignorieren". Words
    // are German letters (the view is lower case): Unicode's `\w` made this the largest
    // rule by far (2.5 MiB compiled, 3 MiB of idle RSS).
    rule(
        "i18n.de_object_first",
        Multilingual,
        0.8,
        r"(?:obigen|vorherigen|vorangegangenen|bisherigen|vorigen|früheren)[^a-zäöüß0-9_]+(?:[a-zäöüß0-9_]+[^a-zäöüß0-9_]+){0,2}?(?:ausführungen|anweisungen|instruktionen|aufgaben|informationen|angaben|befehle|regeln)[^a-zäöüß0-9_]+(?:[a-zäöüß0-9_]+[^a-zäöüß0-9_]+){0,8}?(?:ignorieren|vergessen|streichen|missachten|übergehen)|abweichend (?:zu|von) (?:den )?(?:vorherigen|obigen|bisherigen) (?:instruktionen|anweisungen)",
    ),
    rule(
        "i18n.de_new_task",
        Multilingual,
        0.6,
        r"\b(?:nun|jetzt) (?:folgen|kommt|kommen) (?:neue|eine neue|weitere) (?:aufgabe|aufgaben|anweisung|anweisungen)\b",
    ),
    rule(
        "i18n.fr",
        Multilingual,
        0.8,
        r"\b(?:ignore[zr]?|oublie[zr]?|ne tiens? pas compte)\b.{0,40}\b(?:toutes?|tous|les|précédentes?|precedentes?|instructions|consignes|règles|regles)\b",
    ),
    rule(
        "i18n.es",
        Multilingual,
        0.8,
        r"\b(?:ignora|ignore|olvida|olvide|olvídate|omite)\b.{0,40}\b(?:todas?|las|los|anteriores|previas|instrucciones|reglas|indicaciones)\b",
    ),
    rule(
        "i18n.pt",
        Multilingual,
        0.8,
        r"\b(?:ignore|ignora|esqueça|esqueca|desconsidere)\b.{0,40}\b(?:todas?|as|os|anteriores|prévias|previas|instruções|instrucoes|regras)\b",
    ),
    rule(
        "i18n.it",
        Multilingual,
        0.8,
        r"\b(?:ignora|dimentica|trascura|non seguire)\b.{0,40}\b(?:tutte?|le|precedenti|istruzioni|regole|indicazioni)\b",
    ),
    rule(
        "i18n.ru",
        Multilingual,
        0.8,
        r"(?:игнорируй|игнорируйте|забудь|забудьте|не обращай внимания на|проигнорируй)\s*.{0,40}(?:все|предыдущие|прошлые|инструкции|указания|правила)",
    ),
    rule(
        "i18n.zh",
        Multilingual,
        0.8,
        r"(?:忽略|无视|無視|忘记|忘記|不要理会|忽视)\s*.{0,12}(?:之前|以前|上面|先前|所有|全部)?\s*.{0,6}(?:指令|指示|说明|說明|规则|規則|提示|要求|命令)",
    ),
    rule(
        "i18n.ja",
        Multilingual,
        0.8,
        r"(?:(?:以前|前|上記|これまで|すべて|全て)の.{0,6}(?:指示|命令|ルール|プロンプト)を.{0,4}(?:無視|忘れ))|(?:指示を無視)",
    ),
    // German: what was said before declared void, or not to be listened to; the prompt
    // above printed.
    rule(
        "i18n.de_void",
        Multilingual,
        0.7,
        r"\balle (?:vorherigen|bisherigen|früheren|obigen|vorigen) (?:informationen|anweisungen|befehle|aufgaben|instruktionen)\b.{0,60}\b(?:irrelevant|unwichtig|falsch|ungültig|nicht (?:ganz |mehr |so )?(?:großartig|wichtig|relevant|gültig|richtig))|\bhöre? nicht (?:mehr )?auf (?:alles|das|die anweisungen)\b.{0,20}\b(?:zuvor|vorher|bisher|davor|oben)",
    ),
    rule(
        "i18n.de_print_prompt",
        Multilingual,
        0.7,
        r"\b(?:drucke|drucken sie|gib|geben sie|zeige|zeigen sie|wiederhole|wiederholen sie)\b.{0,30}\b(?:obige|vorherige|ursprüngliche|erste)n?\b.{0,20}\b(?:eingabeaufforderung|anweisungen?|prompt|instruktionen)\b",
    ),
    // Forgetting everything, in Spanish, South Slavic, Polish, Dutch, Turkish and Korean.
    rule(
        "i18n.forget_all",
        Multilingual,
        0.65,
        r"\bolvid(?:a|e|ar|en|ad)\s+todo\b|\bzaboravi(?:te)?\s+sve\b|\bzapomnij\s+o\s+wszystkim\b|\bvergeet\s+(?:alle|al)\b.{0,30}\b(?:instructies|regels|opdrachten|eerder)|\bönceki\s+(?:tüm\s+)?talimatları\s+unut|(?:이전|앞|위|지금까지)[^.。]{0,20}(?:모든|모두)[^.。]{0,10}잊",
    ),
    // A jailbreak persona named in any language: `[DAN]`, "il s'appellera Dan".
    rule(
        "persona.named_dan",
        Roleplay,
        0.6,
        r"\[(?:dan|dude|stan|aim)\]|\b(?:s'appellera|s'appelle|heißt|heisst|se llama(?:rá)?|si chiamerà|named|called)\s+(?:dan|dude|stan)\b",
    ),
    // Praise for the last task, then a new one: the move that hijacks a running task.
    rule(
        "i18n.de_persona",
        Multilingual,
        0.55,
        r"\bstell(?:e)? dir vor,? (?:du bist|dass du)\b.{0,40}\b(?:böse|bösartig|ki|bot|hacker|ohne (?:regeln|grenzen|filter))\b|\bdu bist (?:keine?|nicht mehr) [a-zäöüß0-9_]+,? sondern\b",
    ),
    rule(
        "i18n.de_fabricate",
        Multilingual,
        0.55,
        r"\b(?:formuliere|schreibe|erfinde|erstelle|generiere)\b.{0,40}\b(?:unwahre|falsche|erfundene|gefälschte)\s+(?:überschrift|schlagzeile|behauptung|nachricht|antwort|geschichte)\b",
    ),
    // "Very good. That is done." then a new task, in German.
    rule(
        "i18n.de_that_is_done",
        Multilingual,
        0.6,
        r"\b(?:sehr gut|gut gemacht|sehr gut gemacht|prima|super|perfekt)\b[.!]?\s+das (?:ist erledigt|genügt|reicht|war's|wars)\b.{0,80}\b(?:nun|jetzt)\b",
    ),
    // Korean: "now you are ... the role of".
    rule(
        "i18n.ko_persona",
        Multilingual,
        0.55,
        r"(?:이제 너는|너는 이제|지금부터 너는).{0,60}(?:역할|캐릭터|페르소나)",
    ),
    rule(
        "override.praise_then_new_task",
        InstructionOverride,
        0.55,
        r"\b(?:sehr gut|gut gemacht|großartig|super|das war (?:schon mal )?(?:ok|gut)|well done|great|amazing|awesome|fantastic|brilliant|that was (?:ok|good|great)|excellent|perfect|congratulations|bravo|très bien|muy bien)\b.{0,120}\b(?:jetzt|nun|now|maintenant|ahora)\b.{0,60}\b(?:neuen?|weiteren?|zweiten?|nächsten?|anderen?|new|next|second|another|different|nouvelle|nueva)\b.{0,20}\b(?:aufgabe|test|herausforderung|task|challenge|assignment|tâche|tarea)\b",
    ),
];
