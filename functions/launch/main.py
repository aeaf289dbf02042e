import functions_framework


@functions_framework.cloud_event
def launch(cloud_event):
    print("launch", cloud_event["id"])
