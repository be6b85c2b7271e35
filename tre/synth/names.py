"""Names for synthetic people: forenames by sex and ethnic group, surnames by ethnic group.
Lists of common names; no real person is described. The nicknames and spellings that
hospital records use instead come from :mod:`tre.linkage.names`, which linkage knows too."""

FORENAMES = {
    ("M", "WHIT"): "Oliver George Harry Jack Jacob Noah Charlie Thomas Oscar William James "
    "Henry Leo Alfie Joshua Freddie Archie Ethan Isaac Alexander Joseph Edward Samuel Max "
    "Daniel Logan Lucas Benjamin Theo Jake Matthew Callum Ryan Lewis Dylan Nathan Robert "
    "Michael Christopher Anthony Richard Andrew Jonathan Patrick",
    ("F", "WHIT"): "Olivia Amelia Isla Ava Emily Sophia Grace Lily Mia Poppy Ella Evie "
    "Charlotte Jessica Daisy Sophie Florence Freya Alice Isabelle Ruby Matilda Holly Erin "
    "Phoebe Scarlett Chloe Elizabeth Katherine Rebecca Hannah Eleanor Abigail Victoria "
    "Samantha Jennifer Megan Lauren Bethany Caitlin Abbie Niamh",
    ("M", "ASIA"): "Mohammed Muhammad Ahmed Ali Yusuf Ibrahim Omar Hamza Zain Ayaan Arjun "
    "Aarav Rohan Vihaan Aryan Hassan Bilal Imran Rayyan Zakariya Harjit Gurpreet Sanjay "
    "Rahul Dev Ishaan Kabir Arham Adam Musa",
    ("F", "ASIA"): "Aisha Fatima Maryam Zara Hafsa Amira Ayesha Inaya Anaya Priya Aanya "
    "Simran Jaspreet Harleen Sana Noor Khadija Zainab Mariam Iqra Ruqayyah Safa Anika Diya "
    "Riya Kiran Leila Sofia Hana Alisha",
    ("M", "BLAK"): "David Daniel Joshua Samuel Emmanuel Michael Jayden Tyrese Kwame Kofi "
    "Tobi Femi Olumide Chidi Isaiah Elijah Malachi Nathaniel Ezekiel Jeremiah Abdi Mohamed "
    "Yasin Marcus Andre Jordan Reuben Caleb Micah Tobias",
    ("F", "BLAK"): "Grace Precious Blessing Esther Favour Abigail Deborah Ruth Naomi Amara "
    "Adaeze Chioma Ife Tolani Nia Zuri Imani Hodan Hibo Sagal Faith Joy Mercy Princess "
    "Jada Kayla Aaliyah Amani Ayana Destiny",
    ("M", "CHIN"): "Wei Jun Hao Ming Yi Chen Kai Lok Hong Jian Tian Yu Zhen Feng Bo",
    ("F", "CHIN"): "Mei Xin Ying Li Hui Yan Lin Jing Xiao Yu Ning Qing Fang Hua Ling",
}

SURNAMES = {
    "WHIT": "Smith Jones Williams Taylor Brown Davies Evans Wilson Thomas Johnson Roberts "
    "Robinson Thompson Wright Walker White Edwards Hughes Green Hall Lewis Harris Clarke "
    "Jackson Wood Turner Martin Cooper Hill Ward Morris Moore Clark Lee King Baker "
    "Harrison Morgan Allen James Scott Phillips Watson Davis Parker Price Bennett Young "
    "Griffiths Mitchell Kelly Cook Carter Richardson Bailey Collins Bell Shaw Murphy Miller "
    "Cox Richards Marshall Anderson Simpson Ellis Adams Wilkinson Foster "
    "Chapman Powell Webb Rogers Gray Mason Hunt Campbell Matthews Owen Palmer Holmes "
    "Mills Barnes Knight Lloyd Butler Russell Barker Fisher Stevens Jenkins Murray Dixon "
    "Harvey Graham Pearson Fletcher Walsh Gibson Howard Andrews Stewart Elliott "
    "Reynolds Saunders Payne Fox Ford Pearce Day Brooks West Lawrence Cole Atkinson Bradley "
    "Spencer Gill Dawson Ball Burton Obrien Watts Rose Booth Perry Ryan Grant Wells Armstrong "
    "Francis Rees Hayes Hart Hudson Newman Barrett Webster Hunter Gregory Carr Lowe Page "
    "Marsh Riley Dunn Woods Parsons Berry Stone Reid Holland Hawkins Harding Porter Robertson "
    "Newton Oliver Reed Kennedy Williamson Bird Gardner Dean Lane Cooke Bates Henderson "
    "Parry Burgess Bishop Walton Burns Nicholson Shepherd Ross Cross Long Freeman Warren "
    "Nicholls Hamilton Byrne Sutton Mcdonald Yates Hodgson Robson Curtis Hopkins Oconnor "
    "Harper Coleman Watkins Moss Mccarthy Chambers Oneill Griffin Sharp Hardy Wheeler Potter "
    "Osborne Johnston Gordon Doyle Wallace George Jordan Hutchinson Rowe Burke May Pritchard "
    "Gilbert Willis Higgins Read Miles Stevenson Stephenson Hammond Arnold Buckley Walters "
    "Hewitt Barber Nelson Slater Austin Sullivan Whitehead Mann Frost Lambert Stephens "
    "Blake Lynch Goodwin Barton Woodward Thomson Cunningham Quinn Barnett Baxter "
    "Clayton Nash Greenwood Jennings Holt Kemp Poole Gallagher Bond Stokes Tucker Davidson "
    "Fowler Heath Norman Middleton Lawson Banks French Stanley Jarvis Gibbs Ferguson Hayward "
    "Carroll Douglas Dickinson Todd Barlow Peters Lucas Knowles Hartley Simmons Morton "
    "Alexander Field Morrison Norris Townsend Preston Hancock Thornton Baldwin Burrows Briggs "
    "Storey Pollard Farrell Whitehouse Howe Kirby Steele Kirk Hurst Lucas Coates Sheppard "
    "Knott Hobbs Bolton Fuller Holden Duncan Moran Wilkins Dobson Stanton ",
    "ASIA": "Khan Patel Ahmed Hussain Ali Singh Begum Shah Akhtar Iqbal Rahman Mahmood "
    "Kaur Sharma Malik Hassan Chaudhry Mirza Qureshi Siddiqui Bibi Aziz Rashid Anwar Butt "
    "Sheikh Islam Uddin Miah Hossain Choudhury Gill Sandhu Dhillon Sidhu Bains Grewal Mistry "
    "Parmar Chauhan Solanki Joshi Desai Mehta Kumar Gupta Verma Rao Nair Pillai Reddy",
    "BLAK": "Okafor Adeyemi Mensah Owusu Boateng Asante Mohamed Abdi Hassan Ali Farah Osei "
    "Adebayo Ogunleye Balogun Williams Johnson Campbell Brown Smith Thomas Francis Grant "
    "Clarke Richards Henry Lewis Reid Bennett Edwards Kamara Sesay Kargbo Nwosu Eze Obi "
    "Okeke Ibrahim Yusuf Diallo Toure Traore Coker Taylor",
    "CHIN": "Wang Li Zhang Chen Liu Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo He Lin Luo "
    "Gao Cheng Leung Wong Chan Cheung Lau Ng Ho Tang Lam",
}


def split(text: str) -> list[str]:
    """The distinct names of a space-separated list, in order."""
    return list(dict.fromkeys(text.split()))
