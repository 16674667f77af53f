"""The 11 Southeast Asian countries of SEA-VL, by ISO 3166-1 alpha-2 code."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Strict


class SeaCountry(StrEnum):
    BN = "BN"  # Brunei
    KH = "KH"  # Cambodia
    ID = "ID"  # Indonesia
    LA = "LA"  # Laos
    MY = "MY"  # Malaysia
    MM = "MM"  # Myanmar
    PH = "PH"  # Philippines
    SG = "SG"  # Singapore
    TH = "TH"  # Thailand
    TL = "TL"  # Timor-Leste
    VN = "VN"  # Vietnam


# A country in a JSON body validated strictly (`JsonBody`): given by its code.
CountryCode = Annotated[SeaCountry, Strict(False)]
