"""Code lists shared by the catalog and the synthetic data."""

# Local authorities (DfE three-digit codes) with a postcode area used in their districts.
LOCAL_AUTHORITIES: dict[str, tuple[str, str]] = {
    "202": ("Camden", "NW"),
    "204": ("Hackney", "E"),
    "206": ("Islington", "N"),
    "209": ("Lewisham", "SE"),
    "212": ("Wandsworth", "SW"),
    "306": ("Croydon", "CR"),
    "330": ("Birmingham", "B"),
    "331": ("Coventry", "CV"),
    "336": ("Wolverhampton", "WV"),
    "341": ("Liverpool", "L"),
    "352": ("Manchester", "M"),
    "353": ("Oldham", "OL"),
    "373": ("Sheffield", "S"),
    "380": ("Bradford", "BD"),
    "383": ("Leeds", "LS"),
    "391": ("Newcastle upon Tyne", "NE"),
    "394": ("Sunderland", "SR"),
    "801": ("Bristol", "BS"),
    "810": ("Kingston upon Hull", "HU"),
    "856": ("Leicester", "LE"),
    "865": ("Wiltshire", "SN"),
    "873": ("Cambridgeshire", "CB"),
    "879": ("Plymouth", "PL"),
    "881": ("Essex", "CM"),
    "886": ("Kent", "ME"),
    "892": ("Nottingham", "NG"),
    "908": ("Cornwall", "TR"),
    "925": ("Lincolnshire", "LN"),
    "926": ("Norfolk", "NR"),
    "929": ("Northumberland", "NE"),
    "935": ("Suffolk", "IP"),
    "936": ("Surrey", "GU"),
    "938": ("West Sussex", "RH"),
}

ETHNICITY = {
    "WHIT": "White",
    "MIXD": "Mixed or multiple ethnic groups",
    "ASIA": "Asian or Asian British",
    "BLAK": "Black or Black British",
    "CHIN": "Chinese",
    "AOEG": "Any other ethnic group",
    "UNCL": "Unclassified (refused or not obtained)",
}

SEN_PROVISION = {
    "N": "No special educational need",
    "K": "SEN support",
    "E": "Education, health and care plan",
}

DFE_SEX = {"M": "Male", "F": "Female"}
HES_SEX = {"1": "Male", "2": "Female", "9": "Not specified"}

ADMISSION_METHOD = {
    "11": "Elective: waiting list",
    "12": "Elective: booked",
    "13": "Elective: planned",
    "21": "Emergency: via A&E",
    "22": "Emergency: via GP",
    "23": "Emergency: via bed bureau",
    "24": "Emergency: via consultant clinic",
    "28": "Emergency: other means",
    "2A": "Emergency: via A&E of another provider",
    "81": "Transfer from another hospital",
}

AE_ARRIVAL_MODE = {"1": "Ambulance", "2": "Other"}

AE_DISPOSAL = {
    "01": "Admitted",
    "02": "Discharged, GP follow-up",
    "03": "Discharged, no follow-up",
    "04": "Referred to an A&E clinic",
    "07": "Left before treatment",
    "10": "Died in department",
    "14": "Other",
}

EXCLUSION_TYPE = {"SUSP": "Suspension (fixed period)", "PERM": "Permanent exclusion"}

EXCLUSION_REASON = {
    "PP": "Physical assault against a pupil",
    "PA": "Physical assault against an adult",
    "VP": "Verbal abuse or threatening behaviour against a pupil",
    "VA": "Verbal abuse or threatening behaviour against an adult",
    "BU": "Bullying",
    "DM": "Damage",
    "DA": "Drug and alcohol related",
    "PD": "Persistent disruptive behaviour",
    "OT": "Other",
}
