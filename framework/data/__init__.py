"""Where scans come from and how they are read: sources, downloads, archives, NIfTI and DICOM, synthetic CT."""
