"""Converters from the MGTIL data sets' official downloads to medcl Parquet manifests
(``medcl data prepare NAME --from DOWNLOAD_DIR --out DIR``); see :mod:`medcl.data.prepare.core`."""
from __future__ import annotations

from medcl.data.prepare.core import DatasetSpec, Record, patient_split, prepare
from medcl.data.prepare.specs import DATASETS, HIERA_MED_TRANSFER, MEDXTREME, SPECS

__all__ = ["DATASETS", "DatasetSpec", "HIERA_MED_TRANSFER", "MEDXTREME", "Record", "SPECS", "patient_split", "prepare"]
