"""DICOMweb (PS3.18) subset under /dicomweb: STOW-RS, QIDO-RS and WADO-RS per clinic, with the service's API keys.

Web-free modules (multipart, dicom_json, qido, uids, index, stow, results, service) hold the rules; routes.py alone
imports FastAPI."""
