"""Vocabulary for the synthetic ad catalog: categories, products, brands, attributes.

Each category lists products (with the search words people type for them), attribute
words that can appear in a title, category-specific selling points (some with numbers),
and made-up brand names. Brands are fictional so that no real company appears in
sample data.
"""

CATEGORIES: dict[str, dict[str, list[str]]] = {
    "electronics": {
        "products": ["Wireless Earbuds", "Noise Cancelling Headphones", "Bluetooth Speaker",
                     "Smartwatch", "4K Action Camera", "Portable Charger", "USB-C Hub",
                     "Mechanical Keyboard"],
        "attributes": ["Waterproof", "Fast Charging", "Compact", "Long Battery Life", "Hi-Fi",
                       "Lightweight", "Dual Pairing"],
        "selling_points": ["Up to 30 hours of playback", "IPX7 water resistance",
                           "Bluetooth 5.3 connection", "18-month warranty",
                           "Charges fully in 90 minutes", "Works with iOS and Android",
                           "Free shipping on orders over $35", "Built-in microphone for calls",
                           "Travel case included", "30-day free returns"],
        "brands": ["Voltaro", "Sonique", "Brightwave", "Kestrel Audio", "Nuvix"],
    },
    "home_kitchen": {
        "products": ["Air Fryer", "Chef's Knife Set", "Espresso Machine", "Nonstick Frying Pan",
                     "Stand Mixer", "Vacuum Sealer", "Electric Kettle", "Rice Cooker"],
        "attributes": ["Stainless Steel", "Dishwasher Safe", "5-Quart", "Programmable",
                       "BPA-Free", "Space-Saving"],
        "selling_points": ["Dishwasher-safe parts", "Includes 50-recipe cookbook",
                           "2-year limited warranty", "Cooks with 85% less oil",
                           "Auto shut-off for safety", "Fits 4 to 6 servings",
                           "Free shipping on orders over $35", "Easy-clean ceramic coating",
                           "1500-watt heating element"],
        "brands": ["Hearthline", "Copperfield Home", "Kitchora", "Maple & Pine", "Saucier"],
    },
    "beauty": {
        "products": ["Vitamin C Serum", "Hydrating Face Moisturizer", "Hair Dryer",
                     "Mineral Sunscreen SPF 50", "Retinol Night Cream", "Makeup Brush Set",
                     "Argan Oil Shampoo"],
        "attributes": ["Fragrance-Free", "Vegan", "Cruelty-Free", "Lightweight",
                       "For Sensitive Skin", "Travel Size"],
        "selling_points": ["Dermatologist tested", "Free of parabens and sulfates",
                           "1.7 oz bottle", "Recyclable packaging",
                           "Suitable for all skin types", "Absorbs in seconds",
                           "Buy 2, get 1 free", "Made with hyaluronic acid"],
        "brands": ["Lumelle", "Verdant Glow", "Aurelie", "Pure Petal", "Skinsmith"],
    },
    "fashion": {
        "products": ["Denim Jacket", "Wool Overcoat", "Leather Sneakers", "Linen Shirt",
                     "Cashmere Sweater", "Chelsea Boots", "Rain Jacket", "Canvas Tote Bag"],
        "attributes": ["Slim Fit", "Relaxed Fit", "Organic Cotton", "Unisex", "Classic",
                       "Water-Repellent"],
        "selling_points": ["Free exchanges within 60 days", "Sizes XS to 3XL",
                           "Machine washable", "Ethically made", "Reinforced stitching",
                           "Available in 6 colors", "Free shipping on orders over $50",
                           "Genuine leather upper", "Packs flat for travel", "Lifetime repairs"],
        "brands": ["Northloom", "Ashgrove", "Meridian & Co", "Tallow Street", "Fernwood"],
    },
    "sports_outdoors": {
        "products": ["Hiking Boots", "Trail Running Shoes", "Camping Tent", "Yoga Mat",
                     "Insulated Water Bottle", "Mountain Bike Helmet", "Sleeping Bag",
                     "Trekking Poles"],
        "attributes": ["Waterproof", "Lightweight", "4-Season", "Non-Slip", "Breathable",
                       "Packable"],
        "selling_points": ["Vibram rubber outsole", "Weighs only 2.1 lbs",
                           "Keeps drinks cold for 24 hours", "Sets up in 5 minutes",
                           "Lifetime warranty", "Rated to 20°F",
                           "Free shipping on orders over $35", "Reflective details for night use"],
        "brands": ["Summitcraft", "Trailvane", "Ridgeback Outdoor", "Cairn & Co", "Alpenglow"],
    },
    "toys_games": {
        "products": ["Building Block Set", "Wooden Puzzle", "Remote Control Car",
                     "Strategy Board Game", "Plush Bear", "Science Kit", "Card Game"],
        "attributes": ["Educational", "STEM", "Family-Friendly", "Ages 8+", "Award-Winning"],
        "selling_points": ["Over 500 pieces", "Non-toxic materials", "2 to 6 players",
                           "Batteries included", "Encourages creative play",
                           "Games last about 30 minutes", "Gift-ready box",
                           "2-year warranty on every piece", "Travel case included",
                           "Sets up in 2 minutes", "Free shipping on orders over $35"],
        "brands": ["Brickwise", "Tumbleweed Toys", "Puzzlecraft", "Little Orbit", "Gamewright Lane"],
    },
    "books": {
        "products": ["Mystery Novel", "Cookbook", "Sci-Fi Trilogy Box Set", "Self-Help Guide",
                     "Children's Picture Book", "History Biography", "Travel Guide"],
        "attributes": ["Hardcover", "Paperback", "Bestselling", "Illustrated", "New Edition"],
        "selling_points": ["Over 1 million copies sold", "Includes bonus chapter",
                           "320 pages", "Available as audiobook", "Signed first printing",
                           "Free shipping on orders over $25", "Printed on recycled paper",
                           "Pocket-size edition", "Durable sewn binding", "Lay-flat binding"],
        "brands": ["Quillhouse Press", "Lanternlight Books", "Oakleaf Publishing", "Inkwell & Co"],
    },
    "pet_supplies": {
        "products": ["Grain-Free Dog Food", "Cat Scratching Post", "Orthopedic Dog Bed",
                     "Automatic Pet Feeder", "Dog Harness", "Clumping Cat Litter", "Chew Toy Set"],
        "attributes": ["Grain-Free", "Adjustable", "Odor-Control", "Durable", "Vet-Recommended"],
        "selling_points": ["Real chicken is the first ingredient", "Machine-washable cover",
                           "Holds up to 4 days of meals", "Reflective stitching",
                           "99% dust-free", "Subscribe and save 10%", "Chew-resistant build",
                           "Folds flat for travel", "Easy-clean removable cover"],
        "brands": ["Pawsome Pantry", "Whisker & Tail", "Barkley Goods", "Furrow Pet"],
    },
    "automotive": {
        "products": ["Dash Cam", "Car Phone Mount", "Portable Jump Starter", "Tire Inflator",
                     "Seat Cover Set", "Car Vacuum"],
        "attributes": ["1080p", "Magnetic", "Cordless", "Heavy-Duty", "Universal Fit"],
        "selling_points": ["Night vision recording", "Starts engines up to 6.0L",
                           "Inflates a tire in 4 minutes", "Fits 95% of vehicles",
                           "12V car adapter included", "1-year warranty",
                           "Free shipping on orders over $35"],
        "brands": ["Roadmate", "Gearshift Pro", "Axleworks", "Motorlume"],
    },
    "grocery": {
        "products": ["Organic Coffee Beans", "Green Tea Sampler", "Protein Bars",
                     "Extra Virgin Olive Oil", "Dark Chocolate Bar", "Trail Mix", "Maple Syrup"],
        "attributes": ["Organic", "Fair Trade", "Gluten-Free", "Single-Origin", "Low Sugar"],
        "selling_points": ["Roasted in small batches", "Pack of 12", "20 grams of protein",
                           "Cold-pressed", "No artificial flavors", "Resealable bag"],
        "brands": ["Harvest Row", "Bean & Bough", "Goldenfield", "Orchard Table"],
    },
    "health_wellness": {
        "products": ["Electric Toothbrush", "Massage Gun", "Smart Scale", "Multivitamin Gummies",
                     "Foam Roller", "Blood Pressure Monitor", "Resistance Bands"],
        "attributes": ["Rechargeable", "Quiet", "Bluetooth", "Portable", "Sugar-Free"],
        "selling_points": ["Two-minute smart timer", "5 speed settings", "Syncs with a free app",
                           "60-day supply", "Carrying case included", "Third-party tested",
                           "1-year warranty", "Free shipping on orders over $35"],
        "brands": ["Vitalis", "Everwell", "Pulsefit", "Calmora"],
    },
    "travel": {
        "products": ["Carry-On Suitcase", "Travel Backpack", "Packing Cubes", "Neck Pillow",
                     "Passport Wallet", "Universal Travel Adapter"],
        "attributes": ["Hardside", "Expandable", "Lightweight", "Water-Resistant", "RFID-Blocking"],
        "selling_points": ["Fits most airline overhead bins", "360-degree spinner wheels",
                           "TSA-approved lock", "Set of 6 cubes", "Works in 150 countries",
                           "10-year warranty", "Free shipping on orders over $35",
                           "Machine-washable lining"],
        "brands": ["Wayfarer Lane", "Jetstone", "Globetrek", "Nomad & Co"],
    },
    "baby": {
        "products": ["Convertible Car Seat", "Baby Monitor", "Stroller", "Diaper Bag Backpack",
                     "Baby Carrier", "Bottle Warmer"],
        "attributes": ["Lightweight", "Foldable", "Organic Cotton", "Adjustable", "Hands-Free"],
        "selling_points": ["Folds with one hand", "Night vision and two-way talk",
                           "Meets federal safety standards", "Fits infants from 8 lbs",
                           "Machine-washable fabric", "Warms a bottle in 3 minutes",
                           "2-year warranty", "Subscribe and save 10%"],
        "brands": ["Little Lark", "Cradlewood", "Tot & Tumble", "Nestling"],
    },
    "garden": {
        "products": ["Cordless Lawn Mower", "Raised Garden Bed", "Garden Hose", "Pruning Shears",
                     "Solar Path Lights", "Compost Bin"],
        "attributes": ["Cordless", "Expandable", "Rust-Resistant", "Solar-Powered", "Ergonomic"],
        "selling_points": ["Cuts up to 1/2 acre per charge", "Cedar wood construction",
                           "Kink-free 50 ft hose", "Set of 8 lights", "Tool-free assembly",
                           "3-year warranty"],
        "brands": ["Greenthumb Works", "Bramble & Bloom", "Yardcraft", "Fieldstone Garden"],
    },
    "gaming": {
        "products": ["Gaming Mouse", "Gaming Headset", "Controller Charging Dock",
                     "Curved Gaming Monitor", "Gaming Chair", "RGB Mouse Pad"],
        "attributes": ["Wireless", "RGB", "Ergonomic", "144Hz", "Low-Latency"],
        "selling_points": ["16,000 DPI optical sensor", "7.1 surround sound",
                           "1 ms response time", "Supports up to 300 lbs",
                           "Charges 2 controllers at once", "2-year warranty",
                           "Free shipping on orders over $35", "Tool-free assembly",
                           "Lightweight 58 g shell"],
        "brands": ["Fragstorm", "Pixelforge", "Nightcore Gear", "Respawn Labs"],
    },
}

# Words that turn a product into a search query; the rest of the query is product words.
QUERY_PREFIXES = ["best", "cheap", "", "", "", "buy", "top rated", ""]
QUERY_SUFFIXES = ["", "", "sale", "for men", "for women", "reviews", "deal", "", "2026"]

# What shoppers value, within any category: an ad leans on one of these (its attributes and
# selling points), and a persona prefers ads that speak to what it values. Cues are
# lower-case substrings of attribute and selling-point texts.
VALUES: dict[str, list[str]] = {
    "price": ["price match", "free shipping", "buy 2", "subscribe and save", "pack of",
              "set of", "free returns", "free exchanges"],
    "durability": ["warranty", "reinforced", "heavy-duty", "durable", "rust-resistant",
                   "stainless steel", "waterproof", "hardside", "genuine leather", "vibram",
                   "4-season", "kink-free", "water resistance", "chew-resistant", "repairs",
                   "sewn binding"],
    "portability": ["travel", "weighs only", "folds", "carrying case", "compact",
                    "lightweight", "packable", "foldable", "portable", "space-saving",
                    "cordless", "overhead bins", "resealable", "expandable", "pocket-size",
                    "packs flat", "folds flat"],
    "performance": ["hours of playback", "bluetooth 5.3", "watt", "dpi", "response time",
                    "surround sound", "starts engines", "night vision", "grams of protein",
                    "speed settings", "charges fully", "cuts up to", "hi-fi", "fast charging",
                    "1080p", "144hz", "low-latency", "inflates", "rated to", "4k"],
    "natural": ["recyclable", "parabens", "non-toxic", "ethically", "artificial",
                "cold-pressed", "cedar", "real chicken", "organic", "bpa-free", "vegan",
                "cruelty-free", "fair trade", "fragrance-free", "grain-free", "solar",
                "gluten-free", "hyaluronic", "low sugar", "third-party tested", "recycled"],
}

# What personas do: an activity spans categories (a hiker clicks boots, tents and action
# cameras), and every product belongs to at least one activity. `audience` is the honest
# framing a title may use for them (config/lexicons/activities.yaml holds the same, as
# data the teacher reads); products are (category, product) pairs above.
ACTIVITIES: dict[str, dict] = {
    "hiking": {"audience": "for hikers", "products": [
        ("sports_outdoors", "Hiking Boots"), ("sports_outdoors", "Camping Tent"),
        ("sports_outdoors", "Sleeping Bag"), ("sports_outdoors", "Trekking Poles"),
        ("sports_outdoors", "Insulated Water Bottle"), ("electronics", "4K Action Camera"),
        ("electronics", "Portable Charger"), ("travel", "Travel Backpack"),
        ("electronics", "Bluetooth Speaker"), ("sports_outdoors", "Mountain Bike Helmet")]},
    "commuting": {"audience": "for commuters", "products": [
        ("electronics", "Wireless Earbuds"), ("electronics", "Noise Cancelling Headphones"),
        ("electronics", "Portable Charger"), ("fashion", "Rain Jacket"),
        ("travel", "Travel Backpack"), ("automotive", "Car Phone Mount"),
        ("automotive", "Dash Cam"), ("fashion", "Canvas Tote Bag")]},
    "home_office": {"audience": "for remote workers", "products": [
        ("electronics", "Mechanical Keyboard"), ("electronics", "USB-C Hub"),
        ("electronics", "Noise Cancelling Headphones"), ("home_kitchen", "Espresso Machine"),
        ("home_kitchen", "Electric Kettle"), ("gaming", "Curved Gaming Monitor"),
        ("gaming", "Gaming Chair"), ("books", "Self-Help Guide")]},
    "fitness": {"audience": "for fitness fans", "products": [
        ("sports_outdoors", "Yoga Mat"), ("sports_outdoors", "Trail Running Shoes"),
        ("health_wellness", "Massage Gun"), ("health_wellness", "Foam Roller"),
        ("health_wellness", "Resistance Bands"), ("health_wellness", "Smart Scale"),
        ("grocery", "Protein Bars"), ("electronics", "Smartwatch")]},
    "cooking": {"audience": "for home cooks", "products": [
        ("home_kitchen", "Air Fryer"), ("home_kitchen", "Chef's Knife Set"),
        ("home_kitchen", "Nonstick Frying Pan"), ("home_kitchen", "Stand Mixer"),
        ("home_kitchen", "Rice Cooker"), ("books", "Cookbook"),
        ("grocery", "Extra Virgin Olive Oil"), ("grocery", "Maple Syrup"),
        ("home_kitchen", "Vacuum Sealer")]},
    "travel": {"audience": "for travelers", "products": [
        ("travel", "Carry-On Suitcase"), ("travel", "Packing Cubes"), ("travel", "Neck Pillow"),
        ("travel", "Passport Wallet"), ("travel", "Universal Travel Adapter"),
        ("electronics", "Noise Cancelling Headphones"), ("books", "Travel Guide")]},
    "gaming": {"audience": "for gamers", "products": [
        ("gaming", "Gaming Mouse"), ("gaming", "Gaming Headset"),
        ("gaming", "Controller Charging Dock"), ("gaming", "Curved Gaming Monitor"),
        ("gaming", "Gaming Chair"), ("gaming", "RGB Mouse Pad"),
        ("electronics", "Mechanical Keyboard")]},
    "gardening": {"audience": "for gardeners", "products": [
        ("garden", p) for p in ("Cordless Lawn Mower", "Raised Garden Bed", "Garden Hose",
                                "Pruning Shears", "Solar Path Lights", "Compost Bin")]},
    "self_care": {"audience": "for self-care", "products": [
        ("beauty", p) for p in ("Vitamin C Serum", "Hydrating Face Moisturizer", "Hair Dryer",
                                "Mineral Sunscreen SPF 50", "Retinol Night Cream",
                                "Makeup Brush Set", "Argan Oil Shampoo")] + [
        ("health_wellness", "Electric Toothbrush"), ("health_wellness", "Multivitamin Gummies"),
        ("health_wellness", "Blood Pressure Monitor")]},
    "reading": {"audience": "for book lovers", "products": [
        ("books", p) for p in ("Mystery Novel", "Sci-Fi Trilogy Box Set", "Self-Help Guide",
                               "History Biography", "Travel Guide", "Children's Picture Book")]},
    "game_night": {"audience": "for game night", "products": [
        ("toys_games", p) for p in ("Building Block Set", "Wooden Puzzle", "Remote Control Car",
                                    "Strategy Board Game", "Plush Bear", "Science Kit",
                                    "Card Game")]},
    "road_trips": {"audience": "for road trippers", "products": [
        ("automotive", p) for p in ("Dash Cam", "Car Phone Mount", "Portable Jump Starter",
                                    "Tire Inflator", "Seat Cover Set", "Car Vacuum")] + [
        ("grocery", "Trail Mix"), ("travel", "Neck Pillow")]},
    "baby_gear": {"audience": None, "products": [  # no framing: family status is a guess
        ("baby", p) for p in ("Convertible Car Seat", "Baby Monitor", "Stroller",
                              "Diaper Bag Backpack", "Baby Carrier", "Bottle Warmer")]},
    "coffee_pantry": {"audience": "for coffee lovers", "products": [
        ("grocery", p) for p in ("Organic Coffee Beans", "Green Tea Sampler", "Dark Chocolate Bar",
                                 "Maple Syrup", "Extra Virgin Olive Oil")] + [
        ("home_kitchen", "Espresso Machine"), ("home_kitchen", "Electric Kettle")]},
    "style": {"audience": "for style seekers", "products": [
        ("fashion", p) for p in CATEGORIES["fashion"]["products"]]},
    "pets": {"audience": "for pet owners", "products": [
        ("pet_supplies", p) for p in ("Grain-Free Dog Food", "Cat Scratching Post",
                                      "Orthopedic Dog Bed", "Automatic Pet Feeder",
                                      "Dog Harness", "Clumping Cat Litter", "Chew Toy Set")]},
}
