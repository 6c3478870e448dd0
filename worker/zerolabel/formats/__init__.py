"""Dataset formats: the export data model, COCO / YOLO / VOC writers and the Label Studio
export reader."""
