"""De-identified reading: the attributes that identify a patient, and how they leave a DICOM JSON dataset.

:data:`IDENTIFYING_KEYWORDS` follows DICOM PS3.15 Annex E, Table E.1-1 (the Basic Application Level
Confidentiality Profile): every attribute that profile removes, empties or replaces (actions X, Z,
D, X/Z, X/D, X/Z/D ...) except the UIDs, which are kept as the profile's *Retain UIDs* option
(E.3.9) allows: a viewer needs them to ask for the same instance's frames. On top of the list, the
profile's group rules: every private attribute (odd group) and the repeating overlay and curve
groups (60xx,3000)/(60xx,4000) and (50xx,xxxx) are removed too.

This is what a reader of a job with ``allowPatientIdentifiers: false`` may see: pixels, and metadata
without these attributes. Pixel data itself can carry burned-in text; this module does not look at
pixels (the profile's *Clean Pixel Data* option is not applied).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.datadict import tag_for_keyword

IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "AccessionNumber", "AcquisitionComments", "AcquisitionContextSequence", "AcquisitionDate",
    "AcquisitionDateTime", "AcquisitionDeviceProcessingDescription", "AcquisitionProtocolDescription",
    "AcquisitionTime", "ActualHumanPerformersSequence", "AdditionalPatientHistory", "AdmissionID",
    "AdmittingDate", "AdmittingDiagnosesCodeSequence", "AdmittingDiagnosesDescription", "AdmittingTime",
    "Allergies", "AuthorObserverSequence", "BranchOfService", "CassetteID",
    "CommentsOnThePerformedProcedureStep", "ConfidentialityConstraintOnPatientDataDescription",
    "ContentCreatorIdentificationCodeSequence", "ContentCreatorName", "ContentDate", "ContentSequence",
    "ContentTime", "ContrastBolusAgent", "ContributionDescription", "CountryOfResidence",
    "CurrentPatientLocation", "CurveDate", "CurveTime", "CustodialOrganizationSequence",
    "DataSetTrailingPadding", "DerivationDescription", "DetectorID", "DeviceSerialNumber",
    "DigitalSignaturesSequence", "DischargeDiagnosisDescription", "DistributionAddress", "DistributionName",
    "EthnicGroup", "FillerOrderNumberImagingServiceRequest", "FrameComments", "GantryID", "GeneratorID",
    "GraphicAnnotationSequence", "HumanPerformerName", "HumanPerformerOrganization", "IconImageSequence",
    "IdentifyingComments", "ImageComments", "ImagePresentationComments", "ImagingServiceRequestComments",
    "Impressions", "InstanceCreationDate", "InstanceCreationTime", "InstitutionAddress",
    "InstitutionCodeSequence", "InstitutionName", "InstitutionalDepartmentName", "InsurancePlanIdentification",
    "IntendedRecipientsOfResultsIdentificationSequence", "InterpretationApproverSequence",
    "InterpretationAuthor", "InterpretationDiagnosisDescription", "InterpretationIDIssuer",
    "InterpretationRecorder", "InterpretationText", "InterpretationTranscriber", "IssuerOfAdmissionID",
    "IssuerOfPatientID", "IssuerOfServiceEpisodeID", "LastMenstrualDate", "MedicalAlerts",
    "MedicalRecordLocator", "MilitaryRank", "ModifiedAttributesSequence", "ModifiedImageDescription",
    "ModifyingDeviceID", "NameOfPhysiciansReadingStudy", "NamesOfIntendedRecipientsOfResults", "Occupation",
    "OperatorIdentificationSequence", "OperatorsName", "OrderCallbackPhoneNumber", "OrderEnteredBy",
    "OrderEntererLocation", "OriginalAttributesSequence", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "OverlayDate", "OverlayTime", "ParticipantSequence", "PatientAddress", "PatientAge",
    "PatientBirthDate", "PatientBirthName", "PatientBirthTime", "PatientComments", "PatientID",
    "PatientInstitutionResidence", "PatientInsurancePlanCodeSequence", "PatientMotherBirthName", "PatientName",
    "PatientPrimaryLanguageCodeSequence", "PatientPrimaryLanguageModifierCodeSequence",
    "PatientReligiousPreference", "PatientSex", "PatientSexNeutered", "PatientSize", "PatientState",
    "PatientTelecomInformation", "PatientTelephoneNumbers", "PatientTransportArrangements", "PatientWeight",
    "PerformedLocation", "PerformedProcedureStepDescription", "PerformedProcedureStepEndDate",
    "PerformedProcedureStepEndTime", "PerformedProcedureStepID", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "PerformedStationAETitle",
    "PerformedStationGeographicLocationCodeSequence", "PerformedStationName",
    "PerformedStationNameCodeSequence", "PerformingPhysicianIdentificationSequence", "PerformingPhysicianName",
    "PersonAddress", "PersonIdentificationCodeSequence", "PersonName", "PersonTelephoneNumbers",
    "PhysicianApprovingInterpretation", "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence",
    "PhysiciansReadingStudyIdentificationSequence", "PlateID", "PreMedication", "PregnancyStatus",
    "ProtocolName", "ReasonForStudy", "ReasonForTheImagingServiceRequest", "ReferencedDigitalSignatureSequence",
    "ReferencedPatientAliasSequence", "ReferencedPatientSequence", "ReferencedPerformedProcedureStepSequence",
    "ReferencedSOPInstanceMACSequence", "ReferencedStudySequence", "ReferringPhysicianAddress",
    "ReferringPhysicianIdentificationSequence", "ReferringPhysicianName", "ReferringPhysicianTelephoneNumbers",
    "RegionOfResidence", "RequestAttributesSequence", "RequestedContrastAgent", "RequestedProcedureComments",
    "RequestedProcedureDescription", "RequestedProcedureID", "RequestedProcedureLocation",
    "RequestingPhysician", "RequestingPhysicianIdentificationSequence", "RequestingService",
    "ResponsibleOrganization", "ResponsiblePerson", "ResultsComments", "ResultsDistributionListSequence",
    "ResultsIDIssuer", "ReviewerName", "ScheduledHumanPerformersSequence",
    "ScheduledPatientInstitutionResidence", "ScheduledPerformingPhysicianIdentificationSequence",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription", "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime", "ScheduledProcedureStepLocation", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledStationAETitle",
    "ScheduledStationGeographicLocationCodeSequence", "ScheduledStationName",
    "ScheduledStationNameCodeSequence", "ScheduledStudyLocation", "ScheduledStudyLocationAETitle", "SeriesDate",
    "SeriesDescription", "SeriesTime", "ServiceEpisodeDescription", "ServiceEpisodeID", "SmokingStatus",
    "SpecialNeeds", "StationName", "StudyArrivalDate", "StudyArrivalTime", "StudyComments", "StudyDate",
    "StudyDescription", "StudyID", "StudyIDIssuer", "StudyTime", "TextString", "TopicAuthor", "TopicKeywords",
    "TopicSubject", "TopicTitle", "VerifyingObserverIdentificationCodeSequence", "VerifyingObserverName",
    "VerifyingObserverSequence", "VerifyingOrganization", "VisitComments",
)
"""Keywords of PS3.15 Table E.1-1 attributes removed for de-identified readers (UIDs excepted, see above)."""


def _tags(keywords: Iterable[str]) -> frozenset[str]:
    tags = set()
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:  # a typo here would silently keep an identifying attribute
            raise ValueError(f"unknown DICOM keyword {keyword!r}")
        tags.add(f"{tag:08X}")
    return frozenset(tags)


IDENTIFYING_TAGS: frozenset[str] = _tags(IDENTIFYING_KEYWORDS)
"""The same attributes as DICOM JSON keys (eight upper-case hex digits)."""


def identifying(tag: str) -> bool:
    """Whether a DICOM JSON key (``GGGGEEEE``) names an attribute a de-identified reader must not see."""
    key = tag.upper()
    if key in IDENTIFYING_TAGS:
        return True
    try:
        group, element = int(key[:4], 16), int(key[4:], 16)
    except ValueError:
        return True  # not a tag at all: nothing we can vouch for
    if group % 2 == 1:
        return True  # private attributes
    if 0x5000 <= group <= 0x50FF:
        return True  # curve data (retired, may hold annotations)
    return 0x6000 <= group <= 0x60FF and element in (0x3000, 0x4000)  # overlay data and comments


def strip_dataset(dataset: dict[str, Any]) -> dict[str, Any]:
    """A copy of one DICOM JSON dataset without identifying attributes, sequences cleaned recursively."""
    out: dict[str, Any] = {}
    for tag, element in dataset.items():
        if identifying(tag):
            continue
        if isinstance(element, dict) and element.get("vr") == "SQ" and isinstance(element.get("Value"), list):
            element = {**element, "Value": [strip_dataset(item) if isinstance(item, dict) else item
                                           for item in element["Value"]]}
        out[tag] = element
    return out


def strip_datasets(document: Any) -> list[dict[str, Any]]:
    """A DICOM JSON document (an array of datasets, as WADO-RS metadata and QIDO-RS return) de-identified.

    Anything but an array of objects raises ``ValueError``: a shape we do not know is never passed on.
    """
    if not isinstance(document, list) or not all(isinstance(item, dict) for item in document):
        raise ValueError("not a DICOM JSON array of datasets")
    return [strip_dataset(item) for item in document]
