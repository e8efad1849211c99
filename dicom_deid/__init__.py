"""dicom-deid: de-identify DICOM studies, including the faces in their video."""

__version__ = "0.1.0"
