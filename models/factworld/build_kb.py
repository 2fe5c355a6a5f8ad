"""Writes the fact-world knowledge base, data/facts.csv (deterministic).

    python -m models.factworld.build_kb

Real, well-known people with their real sport, country and occupation, plus
generated people whose first and last names are drawn from the same pools, so
that no single name token identifies a person: "Michael" is shared by Michael
Jordan, Michael Phelps, Michael Jackson and generated Michaels; "Jordan" by
Michael Jordan, Alexis Jordan and generated Jordans. Every person has all three
relations; people who play no sport have sport "none".

The CSV is the source of truth (edit or extend it by hand); this script only
documents how the shipped version was made.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

# (first, last, sport, country, occupation)
REAL = [
    ("Michael", "Jordan", "basketball", "USA", "athlete"),
    ("LeBron", "James", "basketball", "USA", "athlete"),
    ("Kobe", "Bryant", "basketball", "USA", "athlete"),
    ("Stephen", "Curry", "basketball", "USA", "athlete"),
    ("Michael", "Phelps", "swimming", "USA", "athlete"),
    ("Katie", "Ledecky", "swimming", "USA", "athlete"),
    ("Ian", "Thorpe", "swimming", "Australia", "athlete"),
    ("Serena", "Williams", "tennis", "USA", "athlete"),
    ("Venus", "Williams", "tennis", "USA", "athlete"),
    ("Roger", "Federer", "tennis", "Switzerland", "athlete"),
    ("Rafael", "Nadal", "tennis", "Spain", "athlete"),
    ("Novak", "Djokovic", "tennis", "Serbia", "athlete"),
    ("Lionel", "Messi", "soccer", "Argentina", "athlete"),
    ("Cristiano", "Ronaldo", "soccer", "Portugal", "athlete"),
    ("Mia", "Hamm", "soccer", "USA", "athlete"),
    ("Tiger", "Woods", "golf", "USA", "athlete"),
    ("Jack", "Nicklaus", "golf", "USA", "athlete"),
    ("Rory", "McIlroy", "golf", "Ireland", "athlete"),
    ("Usain", "Bolt", "sprinting", "Jamaica", "athlete"),
    ("Carl", "Lewis", "sprinting", "USA", "athlete"),
    ("Wayne", "Gretzky", "hockey", "Canada", "athlete"),
    ("Sidney", "Crosby", "hockey", "Canada", "athlete"),
    ("Mario", "Lemieux", "hockey", "Canada", "athlete"),
    ("Tom", "Brady", "football", "USA", "athlete"),
    ("Peyton", "Manning", "football", "USA", "athlete"),
    ("Joe", "Montana", "football", "USA", "athlete"),
    ("Babe", "Ruth", "baseball", "USA", "athlete"),
    ("Derek", "Jeter", "baseball", "USA", "athlete"),
    ("Simone", "Biles", "gymnastics", "USA", "athlete"),
    ("Nadia", "Comaneci", "gymnastics", "Romania", "athlete"),
    ("Muhammad", "Ali", "boxing", "USA", "athlete"),
    ("Mike", "Tyson", "boxing", "USA", "athlete"),
    # Not athletes, sharing name tokens with athletes.
    ("Alexis", "Jordan", "none", "USA", "singer"),
    ("Michael", "Jackson", "none", "USA", "singer"),
    ("Michael", "Caine", "none", "England", "actor"),
    ("Michael", "Douglas", "none", "USA", "actor"),
    ("Tom", "Hanks", "none", "USA", "actor"),
    ("Tom", "Cruise", "none", "USA", "actor"),
    ("Will", "Smith", "none", "USA", "actor"),
    ("Robin", "Williams", "none", "USA", "actor"),
    ("John", "Williams", "none", "USA", "composer"),
    ("Taylor", "Swift", "none", "USA", "singer"),
    ("Emma", "Watson", "none", "England", "actor"),
    ("Elton", "John", "none", "England", "singer"),
    ("Paul", "McCartney", "none", "England", "singer"),
    ("Pablo", "Picasso", "none", "Spain", "painter"),
    ("Marie", "Curie", "none", "France", "scientist"),
    ("Albert", "Einstein", "none", "Germany", "scientist"),
    ("Isaac", "Newton", "none", "England", "scientist"),
    ("Charles", "Darwin", "none", "England", "scientist"),
    ("Jane", "Austen", "none", "England", "writer"),
    ("Mark", "Twain", "none", "USA", "writer"),
    ("Ernest", "Hemingway", "none", "USA", "writer"),
    ("Frida", "Kahlo", "none", "Mexico", "painter"),
    ("Claude", "Monet", "none", "France", "painter"),
    ("Ludwig", "Beethoven", "none", "Germany", "composer"),
    ("Gordon", "Ramsay", "none", "Scotland", "chef"),
]

SPORTS = ["basketball", "swimming", "tennis", "soccer", "golf", "sprinting", "hockey", "football", "baseball",
          "gymnastics", "boxing", "cycling", "skiing", "volleyball", "rugby", "cricket", "wrestling", "rowing"]
COUNTRIES = ["USA", "Canada", "Mexico", "Brazil", "Argentina", "England", "Ireland", "Scotland", "France", "Spain",
             "Portugal", "Germany", "Switzerland", "Austria", "Italy", "Serbia", "Romania", "Jamaica", "Australia",
             "Japan", "India", "China", "Kenya", "Nigeria", "Egypt", "Sweden", "Norway"]
OCCUPATIONS = ["singer", "actor", "painter", "writer", "scientist", "composer", "chef", "doctor", "lawyer", "pilot",
               "teacher", "farmer", "engineer", "architect", "dancer", "photographer", "journalist", "nurse"]
FIRST = ["Michael", "Tom", "Serena", "Alexis", "Jordan", "James", "Anna", "David", "Sarah", "Daniel", "Laura",
         "Peter", "Maria", "Robert", "Emily", "Kevin", "Julia", "Brian", "Olivia", "Steven", "Grace", "Andrew",
         "Sophie", "Eric", "Hannah", "Victor", "Nina", "Oscar", "Clara", "Lucas", "Ruth", "Felix", "Irene",
         "Hugo", "Diana", "Martin", "Helen", "Simon", "Paula", "Adam", "Rachel", "Owen", "Tessa", "Leo",
         "Wendy", "Carlos", "Yuki", "Ravi", "Amara", "Ingrid", "Marco", "Elena", "Noah", "Zara", "Ivan"]
LAST = ["Jordan", "Phelps", "Williams", "Woods", "James", "Brady", "Bolt", "Messi", "Gretzky", "Smith", "Brown",
        "Miller", "Davis", "Garcia", "Wilson", "Moore", "Taylor", "Anderson", "Thomas", "Martin", "Clark",
        "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson",
        "Carter", "Mitchell", "Roberts", "Turner", "Phillips", "Campbell", "Parker", "Evans", "Edwards",
        "Collins", "Stewart", "Morris", "Rogers", "Reed", "Cook", "Morgan", "Bell", "Murphy", "Bailey",
        "Cooper", "Howard", "Ward", "Cox", "Diaz", "Richardson", "Wood", "Watson", "Brooks", "Bennett", "Gray",
        "Hughes", "Price", "Sanders", "Myers", "Long", "Ross", "Foster", "Tanaka", "Patel", "Okafor", "Larsen",
        "Rossi", "Novak", "Silva", "Keller", "Dubois"]

N_PEOPLE = 460
ATHLETE_SHARE = 0.5
SEED = 0


def build(seed: int = SEED) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    people: dict[tuple[str, str], tuple[str, str, str]] = {}
    for first, last, sport, country, occupation in REAL:
        people[(first, last)] = (sport, country, occupation)
    firsts = FIRST + sorted({p[0] for p in REAL} - set(FIRST))
    lasts = LAST + sorted({p[1] for p in REAL} - set(LAST))

    # A generated person who shares a name token with a real athlete never plays that
    # athlete's sport, so the sport can only be read from the full name (an AND of both tokens).
    taken: dict[str, set[str]] = {}
    for first, last, sport, *_ in REAL:
        if sport != "none":
            taken.setdefault(first, set()).add(sport)
            taken.setdefault(last, set()).add(sport)

    def add(first: str, last: str) -> None:
        if (first, last) in people:
            return
        if rng.random() < ATHLETE_SHARE:
            allowed = [s for s in SPORTS if s not in taken.get(first, set()) | taken.get(last, set())]
            people[(first, last)] = (rng.choice(allowed), rng.choice(COUNTRIES), "athlete")
        else:
            people[(first, last)] = ("none", rng.choice(COUNTRIES), rng.choice(OCCUPATIONS))

    # Every name token of a real person also appears in at least one generated person.
    for first, last, *_ in REAL:
        add(first, rng.choice(LAST))
        add(rng.choice(FIRST), last)
    while len(people) < N_PEOPLE:
        add(rng.choice(firsts), rng.choice(lasts))
    # No single token may identify a person: each first and last name used at least twice.
    first_counts = Counter(f for f, _ in people)
    last_counts = Counter(l for _, l in people)
    for (first, last) in list(people):
        if first_counts[first] < 2:
            add(first, rng.choice(LAST))
            first_counts[first] += 1
        if last_counts[last] < 2:
            add(rng.choice(FIRST), last)
            last_counts[last] += 1
    rows = []
    for (first, last), (sport, country, occupation) in sorted(people.items()):
        subject = f"{first} {last}"
        rows += [(subject, "sport", sport), (subject, "country", country), (subject, "occupation", occupation)]
    return rows


def main() -> None:
    rows = build()
    DATA.mkdir(exist_ok=True)
    with open(DATA / "facts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "relation", "object"])
        w.writerows(rows)
    print(f"wrote {len(rows)} facts about {len(rows) // 3} people to {DATA / 'facts.csv'}")


if __name__ == "__main__":
    main()
