"""Reading runs back for people: the report page, the runs table and LoRA target discovery."""
