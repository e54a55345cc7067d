"""The film folder, below every stage that reads or writes it: where each file lives
(layout), how it is written (atomically), and the manifest's typed records (manifest)."""
