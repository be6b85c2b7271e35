"""The catalog as DCAT-AP JSON-LD, as open-data portals (data.gov.uk, the European Data
Portal) publish metadata: one dcat:Dataset per dataset, with its publisher, description and
columns; never any data."""

from __future__ import annotations

from typing import Any

from tre import catalog

CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "csvw": "http://www.w3.org/ns/csvw#",
    "adms": "http://www.w3.org/ns/adms#",
}


def document(base_url: str) -> dict[str, Any]:
    datasets = []
    for custodian in catalog.CUSTODIANS.values():
        for d in custodian.datasets:
            datasets.append(
                {
                    "@id": f"{base_url}/catalog/{d.name}",
                    "@type": "dcat:Dataset",
                    "dct:identifier": d.name,
                    "dct:title": d.title,
                    "dct:description": d.description,
                    "dct:publisher": {
                        "@type": "foaf:Agent",
                        "foaf:name": custodian.name,
                        "dct:identifier": custodian.id,
                    },
                    "dct:accessRights": {
                        "@id": "http://publications.europa.eu/resource/authority/access-right/RESTRICTED"
                    },
                    "adms:versionNotes": f"catalog version {catalog.CATALOG_VERSION}",
                    "dcat:theme": "education" if custodian.id == "dfe" else "health",
                    "csvw:tableSchema": {
                        "csvw:column": [
                            {
                                "csvw:name": c.released_name,
                                "dct:description": c.description,
                                "csvw:datatype": c.released_type.value,
                                "rdfs:comment": f"sensitivity: {c.sensitivity.value}",
                            }
                            for c in d.released_columns
                        ]
                    },
                }
            )
    return {
        "@context": CONTEXT,
        "@id": f"{base_url}/catalog.jsonld",
        "@type": "dcat:Catalog",
        "dct:title": "Trusted research environment: catalog of linked education and health data",
        "dct:description": "Pseudonymised extracts are available only to approved projects, "
        "inside the TRE.",
        "dcat:dataset": datasets,
    }
