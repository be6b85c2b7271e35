"""Names that stand for the same person: nicknames and transliterated spellings.

Linkage treats names in one group as equal (after normalisation to capital letters); the
synthetic data generator uses the same lists to make the errors hospital records carry.
"""

from __future__ import annotations

# Names a hospital may record instead of the legal forename.
NICKNAMES = {
    "William": "Bill",
    "Robert": "Bob",
    "Thomas": "Tom",
    "Alexander": "Alex",
    "Benjamin": "Ben",
    "Joseph": "Joe",
    "Samuel": "Sam",
    "Daniel": "Danny",
    "Matthew": "Matt",
    "Christopher": "Chris",
    "Michael": "Mike",
    "Anthony": "Tony",
    "Richard": "Rick",
    "Andrew": "Andy",
    "Jonathan": "Jon",
    "Edward": "Ted",
    "Joshua": "Josh",
    "Nathaniel": "Nat",
    "Elizabeth": "Beth",
    "Katherine": "Kate",
    "Rebecca": "Becky",
    "Jessica": "Jess",
    "Charlotte": "Lottie",
    "Eleanor": "Ellie",
    "Abigail": "Abbie",
    "Victoria": "Vicky",
    "Samantha": "Sam",
    "Jennifer": "Jenny",
    "Isabelle": "Izzy",
    "Florence": "Flo",
    "Matilda": "Tilly",
    "Alexandra": "Alex",
    "Olivia": "Liv",
    "Sophia": "Sophie",
    "Emmanuel": "Manny",
    "Nathan": "Nate",
    "Theo": "Theodore",
    "Alfie": "Alfred",
    "Freddie": "Frederick",
    "Harry": "Henry",
}

# Spellings that transliteration makes interchangeable.
VARIANTS = {
    "Mohammed": "Muhammad",
    "Muhammad": "Mohammed",
    "Mohamed": "Mohammed",
    "Yusuf": "Yousef",
    "Aisha": "Ayesha",
    "Ayesha": "Aisha",
    "Hamza": "Hamzah",
    "Maryam": "Mariam",
    "Mariam": "Maryam",
    "Zainab": "Zaynab",
    "Ibrahim": "Ebrahim",
    "Fatima": "Fatimah",
    "Hussain": "Hussein",
    "Chaudhry": "Choudhury",
    "Choudhury": "Chowdhury",
    "Rahman": "Rehman",
    "Mahmood": "Mahmud",
    "Siddiqui": "Siddiqi",
    "Hossain": "Hussain",
    "Uddin": "Udin",
    "Abdi": "Abdy",
    "Mohamud": "Mohamed",
}


def equivalence_classes() -> dict[str, str]:
    """Each name (normalised to capitals) mapped to the representative of its group."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for pairs in (NICKNAMES, VARIANTS):
        for a, b in pairs.items():
            ra, rb = find(a.upper()), find(b.upper())
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return {name: find(name) for name in parent}
