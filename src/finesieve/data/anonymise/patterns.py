"""The vocabularies and regular expressions the anonymisation rules match with: words that are not names,
dates and birth cues, ages, honorifics, demonyms, national ID formats, "Key: value" labels in several languages,
section headings, and the priority of each kind of span. Data only: `rules.py` decides what a match means."""

from __future__ import annotations

import re

# --- vocabulary --------------------------------------------------------------------------------------------

# Words that make a capitalised run a heading, a job title, a place or a product rather than a person's name.
# Written for resumes: section headings in the languages below, job-title words, months, places, tools.
NOT_NAME = frozenset(
    """
    a about academic accomplishments achievements activities additional address affiliations all also an and
    areas as at award awards background bio biography career certificates certification certifications contact
    core courses coursework cover credentials curriculum cv dear details education employment experience
    expertise extracurricular for from history hobbies honors honours information interests key knowledge
    language languages leadership letter licenses licences me memberships my of on overview page personal
    portfolio professional profile projects publications qualifications references referees relevant resume
    résumé skill skills statement strengths summary technical the to training vitae volunteer with work
    highlights competencies objective accomplishment highlight qualification proficiencies abilities
    europass informazioni personali esperienza istruzione formazione competenze lebenslauf persönliche daten
    berufserfahrung ausbildung kenntnisse werdegang studium angaben person informations personnelles
    expérience professionnelle compétences formation éducation langues état civil datos personales experiencia
    formación educación habilidades idiomas hoja vida currículum curriculo currículo objetivo dados pessoais
    experiência formação naam persoonlijke gegevens werkervaring opleiding
    accountant accountants accounting account accounts administrator administrative administration advisor
    adviser advocate agent agriculture analyst analytics animator apparel apprentice architect art arts
    artist assistant associate attorney auditor automobile automotive aviation baker banker banking barista
    bartender billing bookkeeper bpo brand business buyer captain care career cashier center centre certified
    chair chairman chef chemist chief civil claims clerk clinical coach commercial communications compliance
    computer construction consultant content contractor controller coordinator copywriter corporate counsel
    counselor counsellor credit culinary customer data database dba dean delivery dental deputy design
    designer desk developer development digital director dispatcher district doctor driver economist editor
    electrician electrical engineer engineering enterprise entry environmental estimator event events
    executive facilities faculty fellow field finance financial fitness food founder front full general
    generalist graduate graphic guard head health healthcare help hospitality hr human instructor insurance
    intern internship inventory investment it junior kitchen lab laboratory lawyer lead lecturer legal level
    librarian licensed line loan logistics maintenance manager managing marketing mechanic mechanical media
    medical member merchandiser mortgage network nurse nursing office officer operations operator owner
    paralegal partner pastry payroll personal pharmacist physician pilot planner plant platform practitioner
    president principal process procurement producer product production program programmer project property
    public purchasing quality real receptionist recruiter recruiting regional registered relations
    representative research researcher resources restaurant retail risk safety sales scientist secretary
    security senior server service services site social software sous specialist staff stock store strategy
    student superintendent supervisor supply support surgeon system systems tax teacher teaching team
    technical technician technology teller therapist trainee trainer training transport treasurer tutor
    underwriter vice warehouse web welder worker writer cook prep line crew shift ambassador associate
    operations chef ceo cfo cto coo cio vp svp evp avp md rn lpn cna emt
    january february march april may june july august september october november december jan feb mar apr
    jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday saturday sunday present current
    today now
    city state country street road avenue new york san santa los las saint st fort port north south east
    west lake mount beach springs united kingdom states america university college school institute academy
    inc llc ltd gmbh corporation corp company group bank hospital foundation
    microsoft office excel word powerpoint outlook access adobe photoshop illustrator acrobat google
    oracle sap java python sql javascript linux windows mac ios android salesforce quickbooks tableau
    visio sharepoint aws azure cloud jira publisher project projects teams dynamics paint word works asp visual
    studio dr prof mr mrs ms miss sir summa magna cum laude act
    sergeant major captain lieutenant colonel general corporal private admiral commander airman seaman marine
    universidad universidade università universität université universiteit hochschule instituto istituto
    escuela école colegio liceo pontificia
    """.split()
)
HEADING_PREFIX = re.compile(
    r"^\s*(?:curriculum\s+vitae|resume|résumé|cv|lebenslauf|bio-?data|profile)\s*(?:[:\-–—|•·]\s*)", re.IGNORECASE
)
NON_LATIN_HEADINGS = frozenset(
    "个人简历 简历 个人信息 基本信息 工作经历 教育背景 履歴書 職歴 学歴 氏名 बायोडाटा रिज्यूमे Резюме резюме السيرة".split()
)
PARTICLES = frozenset("van von der den de del della di du dos das da le la bin binti ibn al el y ten ter zu".split())

# Employers named after people: NER calls some of them PERSON, and an employer must be kept.
PERSON_NAMED_ORGS = frozenset(
    """morgan stanley|goldman sachs|johnson & johnson|ernst & young|marks & spencer|procter & gamble|
    charles schwab|edward jones|wells fargo|merrill lynch|lehman brothers|booz allen hamilton|arthur andersen|
    john lewis|tommy hilfiger|ralph lauren|calvin klein|christian dior|louis vuitton|hugo boss|estée lauder|
    walt disney|hewlett packard|thomson reuters|kaiser permanente|johns hopkins|carnegie mellon|
    dow jones|j.p. morgan|jp morgan|john deere|ben & jerry's|robert half|robert bosch|max planck""".replace(
        "\n", ""
    ).split("|")
)
ORG_AFTER = re.compile(
    r"\s*(?:&|\band\s+[A-Z]|'s\b|,?\s*(?:Inc|LLC|L\.L\.C|Ltd|GmbH|AG|SE|S\.?A\.?|S\.p\.A|plc|PLC|Co|Corp|Group|Bank|"
    r"University|Universität|Université|Universidad|College|Institute|School|Hospital|Clinic|Foundation|Partners|"
    r"Associates|Consulting|Solutions|Technologies|Systems|Services|Company|Center|Centre|Museum|Library|Hall|"
    r"Building|Street|Road|Avenue|Award|Prize|Scholarship|Fellowship|Lab|Labs|Studio|Studios|Hotel|Hotels)\b)"
)

# --- patterns ----------------------------------------------------------------------------------------------

_MONTH = (
    r"(?:jan(?:uary|uar|vier|eiro)?|jän(?:ner)?|feb(?:ruary|ruar|rero|braio|ruari)?|févr(?:ier)?|fevereiro|"
    r"mar(?:ch|s|zo|ço|co)?|märz|maart|apr(?:il|ile)?|avril|abril|may|mai|mayo|maggio|maio|mei|june?|juni|juin|"
    r"junio|giugno|junho|july?|juli|juillet|julio|luglio|julho|aug(?:ust|ustus)?|août|agosto|sept?(?:ember|iembre|"
    r"embre)?|setiembre|settembre|setembro|oct(?:ober|obre|ubre)?|okt(?:ober)?|ottobre|outubro|nov(?:ember|embre|"
    r"iembre)?|novembro|dec(?:ember|embre)?|dez(?:ember|embro)?|déc(?:embre)?|dic(?:iembre|embre)?|ene(?:ro)?|"
    r"gennaio|desember)"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th|er|º|°|\.)?"
_DATE = (
    rf"(?:{_DAY}(?:\s+of)?[\s\-/.,]*(?:de\s+)?{_MONTH}\.?(?:\s+de)?[\s\-/.,]*(?:19|20)\d{{2}}"  # 12 March 1988
    rf"|{_MONTH}\.?\s+{_DAY},?\s+(?:19|20)\d{{2}}"  # March 12, 1988
    r"|\d{1,2}[./\-]\d{1,2}[./\-](?:19|20)?\d{2}(?!\d)"  # 12/03/1988, 12.03.88
    r"|(?:19|20)\d{2}[./\-]\d{1,2}[./\-]\d{1,2}(?!\d)"  # 1988-03-12
    r"|(?:19|20)\d{2}\s?年\s?\d{1,2}\s?月(?:\s?\d{1,2}\s?日)?"  # 1988年3月12日
    rf"|{_MONTH}\.?\s+(?:19|20)\d{{2}}|(?:19|20)\d{{2}}(?!\d))"  # March 1988, 1988
)
DATE_RE = re.compile(_DATE, re.IGNORECASE)
PLACE = r"(?-i:[A-ZÀ-Þ][\w'\-]+(?:[ \-][A-ZÀ-Þ][\w'\-]+){0,2})"

# A birth cue followed by a date and/or a place: "born in Glasgow on 15/05/2000", "geb. am 28.02.1993 in
# Bremen", "Née le 12 mars 1990 à Lyon", "Nato a Torino il 04/05/1987". "Nato"/"Nata" are case-sensitive so
# that NATO is not a birth.
BIRTH = re.compile(
    rf"(?:\bborn|\bn[ée]e?\b|\bnacid[oa]|(?-i:\b[Nn]at[oa]\b)|\bnascid[oa]|\bgeboren|\bgeb\.)"
    rf"(?P<v>(?:\s+(?:am|on|le|el|il|em))?\s+{_DATE}(?:,?\s+(?:in|à|a|en|em|at)\s+{PLACE})?"
    rf"|\s+(?:in|à|a|en|em|at)\s+{PLACE}(?:,?\s+(?:on|le|il|el|em|am)\s+{_DATE})?)",
    re.IGNORECASE,
)
AGE_STRONG = re.compile(
    # a grown-up's age said of oneself: "I am 34 years old." ("a 4 year old class", "a 20 year old company" are not)
    r"\b(?:1[6-9]|[2-9]\d)\s*(?:years?|yrs?)\.?\s+old\b(?=\s*(?:[.,;:)|/\n]|$|and\b))"
    r"|\baged\s+(?:1[6-9]|[2-9]\d)\b(?!\s*(?:-|to|and)\s*\d)|\b\d{1,2}\s+Jahre\s+alt\b"
    r"|\bâgée?\s+de\s+\d{1,2}\s+ans\b|\btengo\s+\d{1,2}\s+años\b|[满満]\s?\d{1,2}\s?[岁歳]|\d{1,2}\s?[岁歳]",
    re.IGNORECASE,
)
AGE_WEAK = re.compile(
    r"\b\d{1,2}\s+(?:ans|anos|años|anni|Jahre|jaar|years?|yrs)\b"
    r"(?!\s+(?:of|de|d'|d’|di|da|Erfahrung|Berufserfahrung|experience|ervaring|in\b))",
    re.IGNORECASE,
)
LIST_ITEM = re.compile(r"[^,|;/•·\n]+")
PRONOUN_LINE = re.compile(
    r"\(\s*(?:she|he|they|ze|xe)\s*/\s*(?:her|him|them|hir|xem|hers|his|theirs)(?:\s*/\s*\w+)?\s*\)", re.IGNORECASE
)
PRONOUN = re.compile(r"\b(?:[Hh]e|[Ss]he|[Hh]im|[Hh]er|[Hh]is|[Hh]ers|[Hh]imself|[Hh]erself)\b")
SPANISH_HE = re.compile(r"\s+\w+(?:ado|ido|to|cho|so|sto)\b", re.IGNORECASE)  # "He trabajado": I have worked
_HONORIFIC = (
    r"(?:Mr|Mrs|Ms|Miss|Mx|Herr|Frau|Mme|Madame|Mlle|Mademoiselle|Monsieur|Sra|Srta|Señor|Señora|Sig|Sig\.ra|"
    r"Signora|Signor|Dott\.ssa|Smt|Shri|Sri)"
)
_TITLE = rf"(?:{_HONORIFIC}|Dr|Prof|Professor|Dott|Ing|Mag|Dipl\.-Ing)"
_NAME_WORD = rf"(?!(?:{_TITLE})\b)(?:[A-ZÀ-Þ][\w'’\-]*\w|[A-Z]\.)"
TITLED_NAME = re.compile(
    rf"(?<![\w.])(?P<title>{_TITLE})\.?(?:\s+(?:{_TITLE})\.?)*\s+(?P<name>{_NAME_WORD}(?:[ \t]+(?:{_NAME_WORD}|"
    rf"(?:van|von|der|de|del|della|di|du|da|le|la|al|bin)(?=[ \t]+[A-Z]))){{0,3}})"
)
NAME_RUN = re.compile(rf"{_NAME_WORD}(?:\s+(?:{_NAME_WORD}|(?:van|von|der|de|del|da|di|le|la)(?=\s+[A-Z]))){{0,3}}")
GENDER_HONORIFIC = re.compile(rf"^{_HONORIFIC}\.?$")
GENDER_WORDS = frozenset(
    """male female man woman männlich weiblich divers masculin féminin masculine feminine homme femme masculino
    femenino hombre mujer maschile femminile maschio femmina feminino mannelijk vrouwelijk man vrouw 男 女""".split()
)
MARITAL_STRONG = re.compile(
    r"\b(?:married|divorced|widowed|unmarried|verheiratet|geschieden|verwitwet|ledig|mariée?|divorcée?|veuf|veuve|"
    r"célibataire|pacsée?|casad[oa]|divorciad[oa]|solter[oa]|viud[oa]|sposat[oa]|coniugat[oa]|nubile|celibe|"
    r"vedov[oa]|solteir[oa]|getrouwd|ongehuwd|gehuwd|gescheiden|uni[óo]n\s+libre)\b|已婚|未婚|离异|离婚|既婚",
    re.IGNORECASE,
)
MARITAL_WEAK = re.compile(
    r"\b(?:single|engaged|separated|partnered|in\s+a\s+relationship)\b"
    r"|\b(?:\d|one|two|three|four|five|no)\s+(?:children|child|kids|dependents|Kinder|Kind|enfants?|hij[oa]s|"
    r"figli|filhos|kinderen)\b",
    re.IGNORECASE,
)
CHILDREN_STRONG = re.compile(
    r"\b(?:mother|father|parent|mum|mom|dad)\s+of\s+(?:\d|one|two|three|four|five|six)\b", re.IGNORECASE
)
_DEMONYMS = (
    "afghan albanian algerian american argentine argentinian armenian australian austrian azerbaijani bangladeshi "
    "belarusian belgian bolivian bosnian brazilian british bulgarian cambodian cameroonian canadian chilean "
    "chinese colombian congolese croatian cuban cypriot czech danish dominican dutch ecuadorian egyptian emirati "
    "english eritrean estonian ethiopian filipino finnish french georgian german ghanaian greek guatemalan "
    "haitian honduran hungarian icelandic indian indonesian iranian iraqi irish israeli italian ivorian jamaican "
    "japanese jordanian kazakh kenyan korean kosovar kuwaiti latvian lebanese libyan lithuanian luxembourgish "
    "macedonian malaysian maltese mexican moldovan mongolian montenegrin moroccan nepali nepalese nigerian "
    "norwegian omani pakistani palestinian panamanian peruvian polish portuguese qatari romanian russian rwandan "
    "saudi scottish senegalese serbian singaporean slovak slovenian somali spanish sri lankan sudanese swedish "
    "swiss syrian taiwanese tanzanian thai tunisian turkish ugandan ukrainian uruguayan uzbek venezuelan "
    "vietnamese welsh yemeni zambian zimbabwean "
    # other languages' forms, masculine and feminine (seen in personal-details lines)
    "deutsch deutsche österreichisch österreichische schweizerisch französisch italienisch spanisch türkisch "
    "polnisch française français allemande allemand belge suisse espagnole espagnol italienne italien "
    "marocaine marocain algérienne algérien tunisienne tunisien española español mexicana mexicano colombiana "
    "colombiano argentina argentino italiana italiano brasileira brasileiro brasileña brasileño portuguesa "
    "português chilena chileno peruana peruano venezolana venezolano nederlandse nederlands belgische duitse"
)
_DEMONYM_RE = "(?:" + "|".join(sorted(_DEMONYMS.split(), key=len, reverse=True)).replace(" ", r"\s") + ")"
_COUNTRIES = (
    r"(?:U\.?S\.?A?\.?|US|UK|EU|EEA|United\s+States|United\s+Kingdom|New\s+Zealand|South\s+Africa|"
    r"India|China|Germany|France|Spain|Italy|Canada|Australia|Ireland|Mexico|Brazil|Pakistan|Nigeria|Philippines)"
)
CITIZEN = re.compile(
    rf"\b(?:{_DEMONYM_RE}|{_COUNTRIES})\s+(?:citizen(?:ship)?|national|passport(?:\s+holder)?)\b"
    rf"|\bcitizen(?:ship)?\s+of\s+(?:the\s+)?(?-i:[A-Z][\w.]+(?:\s+[A-Z][\w.]+)?)"
    r"|\b(?:H-?1B|Green\s+Card)(?:\s+(?:visa|holder|status))?\b"
    r"|\b(?:H-?4|L-?1|O-?1|TN|E-?3|J-?1|F-?1|Blue\s+Card|Tier\s+[125]|Skilled\s+Worker)\s+visa\b",
    re.IGNORECASE,
)
DEMONYM_ALONE = re.compile(rf"(?<![\w-]){_DEMONYM_RE}(?![\w-])", re.IGNORECASE)
RELIGION_WEAK = re.compile(
    r"\b(?:roman\s+catholic|catholic|christian|protestant|muslim|islam|hindu|sikh|jain|buddhist|jewish|orthodox|"
    r"evangelical|atheist|agnostic|römisch-katholisch|katholisch|evangelisch|muslimisch|catholique|musulmane?|"
    r"protestante?|católic[oa]|musulmán|cattolic[oa]|katolik)\b",
    re.IGNORECASE,
)
HEALTH_WEAK = re.compile(
    r"\b(?:diabetic|diabetes|epilepsy|epileptic|asthma|asthmatic|hiv|disabled|disability|wheelchair\s+user|"
    r"visually\s+impaired|hearing\s+impaired|blind|deaf|pregnant|schwerbehindert|gdb\s+\d+|handicapée?|"
    r"discapacidad)\b",
    re.IGNORECASE,
)
PHYSICAL_STRONG = re.compile(
    r"\b(?:blue|brown|green|hazel|grey|gray|black|dark)\s+eyes\b"
    r"|\b(?:blonde?|brown|black|red|grey|gray|auburn|dark|fair|brunette)\s+hair\b"
    r"|(?<![\w'])[4-7]\s?'\s?\d{1,2}\s?(?:\"|''|”|″)|\b[4-7]\s?ft\.?\s?\d{1,2}\s?in\b",
    re.IGNORECASE,
)
PHYSICAL_WEAK = re.compile(r"\b1[.,]\d{2}\s?m\b|\b1\d{2}\s?cm\b|\b\d{2,3}\s?(?:kg|kgs|lbs?|pounds)\b", re.IGNORECASE)
PHOTO = re.compile(
    r"[\[(<{]\s*(?:photo|foto|photograph|picture|image|bild|lichtbild|passport\s+photo|headshot|照片|写真)\s*[\])>}]"
    r"|\b(?:photo(?:graph)?|foto|picture)\s+(?:attached|enclosed|included|anbei|beigefügt|jointe|adjunta|allegata)\b"
    r"|^\s*(?:photo|foto|bewerbungsfoto|lichtbild)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
NATIONAL_ID = re.compile(
    r"\b\d{3}-\d{2}-\d{4}\b"  # US SSN
    r"|\b(?-i:[A-CEGHJ-PR-TW-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D])\b"  # UK National Insurance
    r"|\b(?-i:[A-Z]{3}[ABCFGHLJPT][A-Z]\d{4}[A-Z])\b"  # India PAN
    r"|\b(?!(?:19|20)\d\d\s(?:19|20)\d\d\s(?:19|20)\d\d)[2-9]\d{3}\s\d{4}\s\d{4}\b"  # India Aadhaar, not 3 years
    r"|\b(?-i:\d{8}-?[A-HJ-NP-TV-Z])\b|\b(?-i:[XYZ]-?\d{7}-?[A-Z])\b"  # Spain DNI, NIE
    r"|\b(?-i:[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z])\b"  # Italy codice fiscale
    r"|\b\d{3}\.\d{3}\.\d{3}-\d{2}\b"  # Brazil CPF
    r"|\b(?-i:[A-Z]{4}\d{6}[HM][A-Z]{5}[A-Z0-9]\d)\b"  # Mexico CURP
    r"|\b\d{17}[\dX]\b",  # China resident ID
    re.IGNORECASE,
)

# "Key: value" labels: (type, label alternation). The value after the label is replaced, the label kept.
_ID_SUFFIX = r"(?:[\s\-]*(?:no\.?|nr\.?|number|num\.?|nummer|n°|nº|#|card|id))*"
LABEL_TABLE: tuple[tuple[str, str], ...] = (
    (
        "PERSON",
        r"(?:full\s+|candidate(?:'s)?\s+|applicant(?:'s)?\s+|first\s+|last\s+|given\s+|family\s+|middle\s+|maiden\s+)?"
        r"name|surname|forenames?|applicant|candidate|(?:father|mother|spouse|husband|wife|guardian|parent)'?s?\s+name"
        r"|name\s+of\s+(?:the\s+)?(?:father|mother|spouse|guardian)|nom(?:\s+de\s+famille)?|prénoms?|nombre"
        r"(?:\s+completo)?|apellidos?|nome(?:\s+completo)?|cognome|sobrenome|vorname|nachname|familienname|naam|"
        r"voornaam|achternaam|姓名|名字|氏名|名前|नाम|имя|фамилия|фио|الاسم"
        # a third person named by their role: "Supervisor: Paul Ayres"
        r"|supervisor(?:'s)?(?:\s+name)?|reference|referee|contact\s+person|reports?\s+to|advis[eo]r|mentor",
    ),
    (
        "DOB",
        r"date\s+of\s+birth|birth\s*date|birthday|d\.?o\.?b\.?|place\s+of\s+birth|birth\s*place|geburtsdatum|"
        r"geburtstag|geburtsort|date\s+de\s+naissance|lieu\s+de\s+naissance|fecha\s+de\s+nacimiento|"
        r"lugar\s+de\s+nacimiento|data\s+di\s+nascita|luogo\s+di\s+nascita|data\s+de\s+nascimento|"
        r"local\s+de\s+nascimento|naturalidade|geboortedatum|geboorteplaats|出生日期|出生年月|生年月日|जन्म\s*तिथि|"
        r"дата\s+рождения",
    ),
    ("AGE", r"age|alter|âge|edad|età|idade|leeftijd|年龄|年齢|आयु|возраст"),
    ("GENDER", r"gender|sex|geschlecht|sexe|sexo|sesso|género|genre|geslacht|pronouns?|性别|性別|लिंग|пол"),
    (
        "MARITAL",
        r"marital\s+status|civil\s+status|family\s+status|relationship\s+status|number\s+of\s+(?:dependents|children)|"
        r"dependents|children|familienstand|kinder|état\s+civil|situation\s+(?:familiale|de\s+famille)|"
        r"estado\s+civil|stato\s+civile|burgerlijke\s+staat|婚姻状况|婚姻状況|वैवाहिक\s+स्थिति",
    ),
    (
        "NATIONALITY",
        r"nationality|citizenship|nationalität|staatsangehörigkeit|staatsbürgerschaft|nationalité|citoyenneté|"
        r"nacionalidad|ciudadanía|nazionalità|cittadinanza|nacionalidade|cidadania|nationaliteit|ethnicity|"
        r"ethnic\s+origin|race|caste|visa\s+status|work\s+(?:permit|authori[sz]ation)|residence\s+permit|"
        r"aufenthaltstitel|aufenthaltsgenehmigung|arbeitserlaubnis|titre\s+de\s+séjour|国籍|民族|籍贯|"
        r"राष्ट्रीयता|гражданство",
    ),
    (
        "RELIGION",
        r"religion|religious\s+affiliation|faith|konfession|religionszugehörigkeit|religión|religione|religião|"
        r"godsdienst|宗教|信仰|धर्म",
    ),
    (
        "HEALTH",
        r"health(?:\s+status)?|state\s+of\s+health|medical\s+(?:conditions?|history)|disabilit(?:y|ies)|handicap|"
        r"allerg(?:y|ies)|blood\s+(?:group|type)|gesundheitszustand|gesundheit|schwerbehinderung|behinderung|gdb|"
        r"état\s+de\s+santé|santé|estado\s+de\s+salud|salud|discapacidad|stato\s+di\s+salute|disabilità|"
        r"estado\s+de\s+saúde|deficiência|gezondheid|健康状况",
    ),
    (
        "PHYSICAL",
        r"height(?:\s+and\s+weight)?|weight|eye\s+colou?r|hair\s+colou?r|build|complexion|größe|körpergröße|"
        r"gewicht|augenfarbe|haarfarbe|taille|poids|couleur\s+des\s+(?:yeux|cheveux)|estatura|altura|peso|"
        r"altezza|lengte|身高|体重",
    ),
    ("PHOTO", r"photo(?:graph)?|foto|lichtbild|照片|写真"),
    (
        "NATIONAL_ID",
        rf"(?:ssn|social\s+security|national\s+insurance|ni|nino|passport|aadha?ar|pan|dni|nie|nif|cpf|curp|rfc|"
        rf"cédula|cedula|codice\s+fiscale|personalausweis|ausweis|reisepass|steuer-?id|"
        rf"sozialversicherungs(?:nummer)?|passeport|pasaporte|passaporto|passaporte|carte\s+d'identité|"
        rf"numéro\s+de\s+sécurité\s+sociale|id|national\s+id|identity\s+card|bsn|身份证(?:号码?)?){_ID_SUFFIX}",
    ),
    (
        "ADDRESS",
        r"(?:home\s+|permanent\s+|present\s+|current\s+|postal\s+|mailing\s+)?add?ress|adresse|anschrift|wohnort|"
        r"dirección|direccion|domicilio|indirizzo|residenza|morada|endereço|adres|woonplaats|地址|住址|现住址|"
        r"現住所|住所|पता|адрес",
    ),
)
_SEP = r"(?P<sep>[ \t]*(?:[:：=]|\|)[ \t]*(?:\n[ \t]*(?=\S))?|[ \t]*\n[ \t]*[:：][ \t]*|\t+|[ \t]{2,}| )"
LABEL_RE = re.compile(
    "(?<![\\w'’])(?:" + "|".join(f"(?P<L{i}>{pattern})" for i, (_, pattern) in enumerate(LABEL_TABLE)) + ")" + _SEP,
    re.IGNORECASE,
)
# Labels whose word is too common to count unless it opens a field ("Age" in "Stone Age", "Name" in
# "Company Name", "Build" in a sentence): these must start a line or follow a field separator.
WEAK_LABELS = frozenset(
    "name applicant candidate nom nombre nome naam age alter edad sex pan ni id race caste faith build health "
    "santé salud gesundheit children kinder dependents taille peso altura photo foto adres address supervisor "
    "reference referee contact reports advisor adviser mentor".split()
)
# A single space between label and value is the Europass layout ("Nationality Italian", "Nome Giulia Rossi");
# in prose the same words are followed by anything ("birthday parties", "Faith Christian Academy"). Only these
# labels take a single space, at the start of a field, with a value of their type's shape (`_single_space_value`).
SINGLE_SPACE_LABEL = re.compile(
    r"(?:name|nom|nome|nombre|naam|vorname|nachname|prénom|cognome|date\s+of\s+birth|geburtsdatum|date\s+de\s+"
    r"naissance|fecha\s+de\s+nacimiento|data\s+di\s+nascita|data\s+de\s+nascimento|geboortedatum|age|alter|"
    r"âge|edad|età|idade|gender|sex|geschlecht|sexe|sexo|sesso|nationality|nationalität|staatsangehörigkeit|"
    r"nationalité|nacionalidad|nazionalità|nacionalidade|nationaliteit|citizenship|cittadinanza|marital\s+status|"
    r"familienstand|estado\s+civil|stato\s+civile|état\s+civil|height|weight|größe|gewicht|taille|poids|"
    r"codice\s+fiscale|personalausweis\S*|passport\S*|reisepass|indirizzo|adresse|anschrift|dirección|morada|"
    r"endereço|[^\x00-\u024f].*)",
    re.IGNORECASE,
)
FIELD_END = re.compile(r"[ \t]*(?:\||;|\t|[ \t]{2,}|\s[–—-]\s|\s[·•]\s)|\n")
# "Married DECLARATION: I hereby..." — a value ends where the next "Key:" begins
FIELD_BEFORE = re.compile(r"(?:[|;•·\t]|\s{2,}|[a-z]\.)\s*$")
RANK = re.compile(r"(?:(?:Dr|Mr|Mrs|Ms|Prof|COL|Col|CPT|Capt|LTC|MAJ|Maj|SGT|Sgt|Lt|Gen)\.?[ \t]+)+")
ROLE_LABEL = re.compile(r"(?:supervisor|reference|referee|contact|reports?|advis|mentor)", re.IGNORECASE)
RELATIVE_LABEL = re.compile(r"(?:father|mother|spouse|husband|wife|guardian|parent|name\s+of)", re.IGNORECASE)
SENTENCE_END = re.compile(r"(?<=[^\W\d_]{2})\.(?=\s)")
NEXT_KEY = re.compile(r"(?<=\S)\s+[A-ZÀ-Þ][^\s:]*(?:\s[^\s:]+){0,2}\s?:(?:\s|$)")
# Longest value kept per type, in characters: a label never takes a whole paragraph with it.
VALUE_LIMIT = {
    "GENDER": 25,
    "AGE": 20,
    "MARITAL": 40,
    "DOB": 50,
    "NATIONALITY": 60,
    "RELIGION": 40,
    "PHYSICAL": 40,
    "NATIONAL_ID": 30,
    "PHOTO": 60,
    "PERSON": 60,
    "HEALTH": 90,
    "ADDRESS": 110,
}
COLOUR = re.compile(
    r"\b(?:blue|brown|green|hazel|grey|gray|black|blonde?|red|auburn|dark|fair|light|medium|"
    r"slim|athletic|average|wheatish)\b",
    re.IGNORECASE,
)

CLOSING = re.compile(
    r"^\s*(?:sincerely|yours\s+(?:sincerely|faithfully|truly)|(?:best|kind|warm|warmest)\s+regards|regards|"
    r"respectfully|with\s+thanks|mit\s+freundlichen\s+grüßen|(?:viele|beste|herzliche)\s+grüße|"
    r"(?:bien\s+)?cordialement|salutations\s+distinguées|atentamente|saludos(?:\s+cordiales)?|cordiali\s+saluti|"
    r"distinti\s+saluti|atenciosamente|cumprimentos|met\s+vriendelijke\s+groet(?:en)?)\s*[,.!]?\s*$",
    re.IGNORECASE,
)
SIGNED = re.compile(r"(?:^|\s)(?:(?:signature|signed|unterschrift)[ \t]*[:：]|/s/)[ \t]*(?=\S)", re.IGNORECASE)
MY_NAME = re.compile(
    r"\b(?:my\s+name\s+is|je\s+m'appelle|ich\s+heiße|me\s+llamo|mi\s+chiamo|meu\s+nome\s+é|mijn\s+naam\s+is)\s+",
    re.IGNORECASE,
)
# "Novella Walton Phone: 404-..." (a page header of a PDF resume)
NAME_BEFORE_CONTACT = re.compile(
    r"(?:^|(?<=\s\s)|(?<=[|•·]\s))(?P<name>(?:[A-ZÀ-Þ][\w'’\-]+[ \t]+){1,3}[A-ZÀ-Þ][\w'’\-]+)[ \t]*[,|]?[ \t]+"
    r"(?=(?i:phone|tel|telephone|mobile|cell|email|e-mail)\.?[ \t]*[:：])",
    re.MULTILINE,
)
ATTRIBUTION = re.compile(r"^[ \t]*[–—-]{1,2}[ \t]*(?P<name>[^,\n(]+),", re.MULTILINE)  # "– Jane Roe, Manager"
FIRST_FIELD = re.compile(r"\s[|–—·•]\s|\s-\s|,|\(|\t|\s{3,}")
PAREN_NAME = re.compile(r"\(([^()\n]{2,40})\)")

SECTION_PERSONAL = re.compile(
    r"^\W*(?:personal\s+(?:details|information|data|profile|particulars)|personal\s+info|persönliche\s+(?:daten|"
    r"angaben)|angaben\s+zur\s+person|informations?\s+personnelles|état\s+civil|datos\s+personales|información\s+"
    r"personal|informazioni\s+personali|dati\s+personali|dados\s+pessoais|informações\s+pessoais|persoonlijke\s+"
    r"gegevens|个人信息|基本信息|個人情報)\W*$",
    re.IGNORECASE,
)
SECTION_REFERENCES = re.compile(
    r"^\W*(?:(?:professional\s+)?references?|referees|referenzen|références|referencias|referenze|referências)\W*$",
    re.IGNORECASE,
)
SECTION_PUBLICATIONS = re.compile(
    r"^\W*(?:(?:selected|sample|recent)\s+)?(?:publications?|presentations?|papers|articles|authored\s+works)\W*$",
    re.IGNORECASE,
)
PEOPLE_CUE = re.compile(
    r"\b(?:phone|tel|mobile|cell|e-?mail|references?|referees?|supervisor|manager|contact|advis[eo]r|mentor|"
    r"reports?\s+to|reported\s+to|supervised\s+by|recommended\s+by|attn|dear|Dr|Mr|Mrs|Ms|Prof)\b\.?\s*[:.]?"
    r"|@|\(\d{3}\)\s?\d{3}|\d{3}[-.]\d{3}[-.]\d{4}|[\"“”]"
)
SECTION_ANY = re.compile(r"^\W*(?:[A-ZÀ-Þ][\w&'’/\-]*(?:\s+(?:[A-Za-zÀ-ÿ][\w&'’/\-]*)){0,4}|[A-ZÀ-Þ\s&/\-]{3,40})\W*$")
LANGUAGES_LINE = re.compile(r"\b(?:languages?|sprachen|langues|idiomas|lingue|línguas|talen|mother\s+tongue)\b", re.I)
YEAR = re.compile(r"(?<!\d)(?:19|20)\d{2}(?!\d)")
LOWER_WORD = re.compile(r"(?<![\w'’\-])[a-zà-ÿß][a-zà-ÿß'’\-]+")
MACHINE_TOKEN = re.compile(r"\S*(?:@|/|www|\w\.\w)\S*")
CAP_PAIR = re.compile(r"(?<![\w'’\-])[A-ZÀ-Þ][a-zà-ÿß'’\-]+\s+(?:[A-Z]\.\s+)?[A-ZÀ-Þ][a-zà-ÿß'’\-]+")
TECH_URL = re.compile(r"^[\w\-]+\.net$", re.IGNORECASE)  # ASP.NET, VB.NET, ADO.NET: skills, not URLs
PROFILE_URL = re.compile(
    r"(?:linkedin\.com/(?:in|pub)/|github\.com/|gitlab\.com/|behance\.net/|dribbble\.com/|twitter\.com/|x\.com/|"
    r"instagram\.com/|facebook\.com/|medium\.com/@|xing\.com/profile/|stackoverflow\.com/users/)",
    re.IGNORECASE,
)
DIGIT_GROUPS = re.compile(r"\d+")
FULL_URL = re.compile(r"^(?:[a-z]+://|www\d{0,3}\.)|/", re.IGNORECASE)  # a scheme, www. or a path
CONTACT_WORDS = re.compile(
    r"@|\b(?:e-?mail|phone|tel|mobile|cell|website|web|portfolio|blog|site|url|homepage|contact)\b", re.IGNORECASE
)
PLATFORM_LABEL = re.compile(
    r"(?:instagram|insta|twitter|tiktok|github|gitlab|telegram|skype|snapchat|facebook|behance|dribbble|medium|"
    r"discord|wechat|whatsapp|youtube)\s*[:=]\s*@?$",
    re.IGNORECASE,
)
AWARD_OR_YEAR_LINE = re.compile(r"\d+[ \t]*\n|(?:19|20)\d\d\s.*\b(?:Place|Circle)$", re.IGNORECASE)

# Span priority when spans overlap: the merged span takes the type of its highest-priority member.
PRIORITY = {"label": 5, "strong": 4, "contact": 3, "weak": 2, "person": 1}
PERSONAL_TYPES = frozenset(
    {"DOB", "AGE", "GENDER", "MARITAL", "NATIONALITY", "RELIGION", "HEALTH", "PHYSICAL", "NATIONAL_ID"}
)
